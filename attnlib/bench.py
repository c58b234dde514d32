"""``python -m attnlib.bench``: the course's speed claims, measured on this machine (lesson 11).

    python -m attnlib.bench [--quick] [--json FILE] [--device D]

prints a markdown table and, with ``--json``, writes the figures to FILE. Every ratio is
measured side by side in the same run, the two contestants interleaved, as the median of
the per-round ratios (:func:`attnlib.measure.compare`), so a busy machine slows both alike:

* ``sdpa_vs_torch``, ``sdpa_causal_vs_torch``, ``sdpa_padding_vs_torch``: the time of
  :func:`attnlib.scaled_dot_product_attention` ÷ ``F.scaled_dot_product_attention`` at
  B=8, H=8, T=512, d=64 (forward), with no mask, causal, and a ``(B, 1, 1, T)`` padding
  mask (goal ≤ 1.05);
* ``naive_vs_fused``: lesson 02's readable path (the L × L weights stored) ÷ the fused path;
* ``mha_vs_torch``: :class:`attnlib.MultiHeadAttention` forward + backward ÷
  ``nn.MultiheadAttention`` (goal ≤ 1.10);
* ``kv_cache_speedup``: greedy generation of 512 new tokens without ÷ with the KV cache
  (goal ≥ 5 on a CPU);
* ``gpt_train_tokens_per_s``: :class:`attnlib.GPT` training (AdamW) at the reference
  configuration (4 layers, 4 heads, d_model 128, block 64, batch 12, vocabulary 65), with
  ``gpt_vs_minimal`` and ``gpt_vs_plain``: its tokens/s ÷ those of a minimal fused GPT and of
  a textbook one (:mod:`attnlib.bench_references`), trained in alternation;
* ``attention_peak_bytes``: ``{T: {"naive", "tiled", "fused": bytes}}``, the memory one
  attention call's tensors take (B=1, H=8, d=64);
* on CUDA also ``sdpa_backend_ms`` (flash, memory-efficient, math), ``sdpa_flash_vs_math``,
  and the GPT's model FLOPs utilisation ``gpt_mfu`` at a GPT-2-small-sized configuration.

``--quick`` takes fewer repeats (well under a minute on a CPU). On a CPU, torch runs with
one thread unless ``--threads`` says otherwise: one thread's timings are steadier on a
shared machine, and tiny models (the KV cache's one-token steps above all) gain nothing
from more. ``machine`` in the JSON says where the figures come from, including the number
of threads and the load on the machine while they were taken.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .attention import scaled_dot_product_attention
from .bench_gpu import bench_cuda
from .bench_references import MinimalGPT, PlainGPT
from .device import get_device
from .fast_attention import tiled_attention
from .gpt import GPT
from .measure import compare, memory_used, synchronize
from .multi_head import MultiHeadAttention

REFERENCE = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, d_model=128)  # and batch 12, AdamW
SIZES = {  # (sdpa B, H, T, d), repeats, (mha B, T, d, H), kv new tokens and repeats, GPT rounds, peak lengths
    "full": dict(sdpa=(8, 8, 512, 64), repeats=15, mha=(8, 256, 256, 8), new_tokens=512, kv_repeats=3,
                 gpt=REFERENCE, batch=12, rounds=40, lengths=(256, 512, 1024, 2048, 4096)),
    "quick": dict(sdpa=(8, 8, 512, 64), repeats=7, mha=(8, 256, 256, 8), new_tokens=512, kv_repeats=1,
                  gpt=REFERENCE, batch=12, rounds=12, lengths=(256, 512, 1024, 2048)),
    "tiny": dict(tiny=True, sdpa=(1, 2, 32, 8), repeats=2, mha=(2, 16, 16, 2), new_tokens=8, kv_repeats=1,
                 gpt=dict(vocab_size=11, block_size=16, n_layer=1, n_head=2, d_model=16), batch=2, rounds=2,
                 lengths=(16, 32)),
}
GOALS = {"sdpa_vs_torch": ("<=", 1.05), "sdpa_causal_vs_torch": ("<=", 1.05), "sdpa_padding_vs_torch": ("<=", 1.05),
         "mha_vs_torch": ("<=", 1.10), "kv_cache_speedup": (">=", 5.0), "gpt_vs_minimal": (">=", 0.95)}



def bench_sdpa(device, size) -> dict:
    """attnlib's scaled_dot_product_attention ÷ torch's, and the readable path ÷ the fused one."""
    batch, heads, length, d = size["sdpa"]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, length, d, generator=g).to(device) for _ in range(3))  # (B, H, T, d)
    real = torch.arange(length)[None, :] < torch.randint(length // 2, length + 1, (batch, 1), generator=g)  # (B, T)
    padding = real[:, None, None, :].to(device)  # (B, 1, 1, T): True = a real key
    r = size["repeats"]
    out = {}
    with torch.no_grad():
        for key, ours, theirs in (
            ("sdpa_vs_torch", lambda: scaled_dot_product_attention(q, k, v), lambda: F.scaled_dot_product_attention(q, k, v)),
            ("sdpa_causal_vs_torch", lambda: scaled_dot_product_attention(q, k, v, causal=True),
             lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
            ("sdpa_padding_vs_torch", lambda: scaled_dot_product_attention(q, k, v, padding),
             lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=padding)),
            ("naive_vs_fused", lambda: scaled_dot_product_attention(q, k, v, return_weights=True),
             lambda: scaled_dot_product_attention(q, k, v)),
        ):
            out[key] = compare(ours, theirs, repeats=r, device=device).ratio
    return out


def bench_mha(device, size) -> dict:
    """MultiHeadAttention forward + backward ÷ nn.MultiheadAttention's, the same weights."""
    batch, length, d, heads = size["mha"]
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(d, heads, batch_first=True).to(device)
    ours = MultiHeadAttention(d, heads).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(batch, length, d, device=device)  # (B, T, d)

    def step(module, call):
        module.zero_grad(set_to_none=True)
        call(module).sum().backward()

    ratio = compare(lambda: step(ours, lambda m: m(x)), lambda: step(theirs, lambda m: m(x, x, x, need_weights=False)[0]),
                    repeats=size["repeats"], device=device).ratio
    return {"mha_vs_torch": ratio}


def bench_kv_cache(device, size) -> dict:
    """Greedy generation of ``new_tokens`` tokens without ÷ with the KV cache (the same tokens)."""
    torch.manual_seed(0)
    config = {**size["gpt"], "block_size": max(1024, size["new_tokens"] + 1)}
    model = GPT(**config).to(device).eval()
    prompt = torch.zeros(1, 1, dtype=torch.long, device=device)  # (1, 1)
    runs = {}
    comparison = compare(lambda: runs.__setitem__("without", model.generate(prompt, size["new_tokens"], temperature=0,
                                                                            use_cache=False)),
                         lambda: runs.__setitem__("with", model.generate(prompt, size["new_tokens"], temperature=0)),
                         repeats=size["kv_repeats"], warmup=0, device=device)
    if not torch.equal(runs["without"], runs["with"]):
        raise AssertionError("greedy tokens differ with and without the KV cache")
    return {"kv_cache_speedup": comparison.ratio, "kv_cache_new_tokens": size["new_tokens"],
            "kv_cache_seconds": {"without": comparison.seconds_a, "with": comparison.seconds_b}}


def bench_gpt(device, size) -> dict:
    """Training tokens/s of attnlib.GPT, a minimal fused GPT and a textbook GPT, stepped in alternation."""
    config, batch = size["gpt"], size["batch"]
    models = {"attnlib": GPT(**config), "minimal": MinimalGPT(**config), "plain": PlainGPT(**config)}
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randint(0, config["vocab_size"], (batch, config["block_size"]), generator=g).to(device)
            for _ in range(2))  # (B, T) each
    steps = {}
    for name, model in models.items():
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        steps[name] = _train_step(model, optimizer, x, y)
    times = {name: [] for name in models}
    for round_ in range(size["rounds"] + 2):  # the first two rounds warm up
        order = list(models) if round_ % 2 == 0 else list(reversed(models))
        for name in order:
            synchronize(device)
            start = time.perf_counter()
            steps[name]()
            synchronize(device)
            if round_ >= 2:
                times[name].append(time.perf_counter() - start)
    tokens = batch * config["block_size"]
    per_s = {name: tokens / _median(ts) for name, ts in times.items()}
    ratios = lambda other: _median([b / a for a, b in zip(times["attnlib"], times[other])])  # noqa: E731
    return {"gpt_train_tokens_per_s": per_s["attnlib"], "gpt_train_tokens_per_s_minimal": per_s["minimal"],
            "gpt_train_tokens_per_s_plain": per_s["plain"], "gpt_vs_minimal": ratios("minimal"),
            "gpt_vs_plain": ratios("plain")}


def _train_step(model, optimizer, x, y):
    def step():
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
    return step


def bench_memory(device, size) -> dict:
    """Bytes one attention call's tensors take at several T: readable (naive), tiled, fused."""
    peaks, watched = {}, device.type == "cuda"
    with torch.no_grad():
        for length in size["lengths"]:
            q, k, v = (torch.randn(1, 8, length, 64, device=device) for _ in range(3))  # (1, H, T, d)
            calls = {"naive": lambda: scaled_dot_product_attention(q, k, v, return_weights=True),
                     "tiled": lambda: tiled_attention(q, k, v, tile_size=128),
                     "fused": lambda: scaled_dot_product_attention(q, k, v)}
            used = {name: memory_used(call, device=device) for name, call in calls.items()}
            peaks[str(length)] = {name: (u.allocator_peak_bytes if watched else u.peak_bytes) for name, u in used.items()}
    return {"attention_peak_bytes": peaks,
            "attention_peak_method": "CUDA allocator peak" if watched else "peak of live tensors (TorchDispatchMode)"}


def machine(device, size_name: str) -> dict:
    """Where and how the figures were taken."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"device": str(device), "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "size": size_name}
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


BENCHMARKS = {"sdpa": bench_sdpa, "mha": bench_mha, "kv_cache": bench_kv_cache, "gpt": bench_gpt,
              "memory": bench_memory, "cuda": bench_cuda}


def run(*, size: str = "full", device=None, progress: bool = True, only: tuple[str, ...] | None = None) -> dict:
    """Run the benchmarks (all, or those named in ``only``) and return the figures (what ``--json`` writes).

    ``size``: ``"full"``, ``"quick"`` or ``"tiny"`` (the smoke test's); ``only``: names among
    ``BENCHMARKS`` (``"cuda"`` runs only on a CUDA device).
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    unknown = sorted(set(only or ()) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"only names unknown benchmarks {unknown}; choose among {sorted(BENCHMARKS)}")
    device = get_device() if device is None else torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for, but torch.cuda.is_available() is False on this machine")
    settings = SIZES[size]
    names = [n for n in BENCHMARKS if (only is None or n in only) and (n != "cuda" or device.type == "cuda")]
    tasks = [BENCHMARKS[n] for n in names]
    results = {"machine": machine(device, size)}
    start = time.perf_counter()
    for task in tqdm(tasks, desc="attnlib.bench", disable=not progress, mininterval=1.0, file=sys.stderr):
        results.update(task(device, settings))
    results["seconds"] = round(time.perf_counter() - start, 1)
    return results


ROWS = (  # key, what, format
    ("sdpa_vs_torch", "attnlib SDPA ÷ torch SDPA, no mask (B8 H8 T512 d64)", "{:.2f}×"),
    ("sdpa_causal_vs_torch", "attnlib SDPA ÷ torch SDPA, causal", "{:.2f}×"),
    ("sdpa_padding_vs_torch", "attnlib SDPA ÷ torch SDPA, (B, 1, 1, T) padding mask", "{:.2f}×"),
    ("naive_vs_fused", "readable path (L×L weights stored) ÷ fused path", "{:.2f}×"),
    ("mha_vs_torch", "MultiHeadAttention ÷ nn.MultiheadAttention, forward + backward", "{:.2f}×"),
    ("kv_cache_speedup", "generation without ÷ with the KV cache", "{:.1f}×"),
    ("gpt_train_tokens_per_s", "attnlib.GPT training tokens/s (reference config)", "{:,.0f}"),
    ("gpt_train_tokens_per_s_minimal", "minimal fused GPT, same config, tokens/s", "{:,.0f}"),
    ("gpt_train_tokens_per_s_plain", "textbook GPT (separate Q/K/V, unfused), tokens/s", "{:,.0f}"),
    ("gpt_vs_minimal", "attnlib.GPT tokens/s ÷ minimal fused GPT's", "{:.2f}×"),
    ("gpt_vs_plain", "attnlib.GPT tokens/s ÷ textbook GPT's", "{:.2f}×"),
    ("sdpa_flash_vs_math", "CUDA: math backend time ÷ flash backend time", "{:.1f}×"),
    ("gpt_cuda_tokens_per_s", "CUDA: GPT-2-small-sized training tokens/s", "{:,.0f}"),
    ("gpt_mfu", "CUDA: model FLOPs utilisation", "{:.1%}"),
)


def format_table(results: dict) -> str:
    """The figures as a markdown table (goals, where the issue set one, and whether they are met)."""
    lines = ["| benchmark | result | goal | met | what |", "|---|---|---|---|---|"]
    for key, what, fmt in ROWS:
        value = results.get(key)
        if value is None:
            continue
        goal = GOALS.get(key)
        met = "" if goal is None else ("yes" if (value <= goal[1] if goal[0] == "<=" else value >= goal[1]) else "no")
        goal_text = "" if goal is None else f"{goal[0]} {goal[1]:g}"
        lines.append(f"| `{key}` | {fmt.format(value)} | {goal_text} | {met} | {what} |")
    peaks = results.get("attention_peak_bytes", {})
    for length, by_method in peaks.items():
        shown = ", ".join(f"{name} {_mib(b)}" for name, b in by_method.items())
        lines.append(f"| `attention_peak_bytes` T={length} | {shown} | | | B1 H8 d64: {results['attention_peak_method']} |")
    for name, ms in results.get("sdpa_backend_ms", {}).items():
        lines.append(f"| `sdpa_backend_ms` {name} | {'unavailable' if ms is None else f'{ms:.2f} ms'} | | | "
                     f"{results['sdpa_backend_shape']} |")
    m = results.get("machine", {})
    lines.append(f"\n{m.get('device')} · {m.get('gpu', m.get('cpu'))} · {m.get('torch_threads')} torch threads · "
                 f"torch {m.get('torch')} · load {m.get('load_average_1min', '?')} · size {m.get('size')} · "
                 f"{results.get('seconds', '?')} s")
    return "\n".join(lines)


def _mib(n) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def _median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnlib.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats: about a minute on two CPU cores")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the test suite's smoke test
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: attnlib.get_device())")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    threads = torch.get_num_threads()
    try:
        device = get_device() if args.device is None else torch.device(args.device)
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        if device.type == "cpu":
            torch.set_num_threads(args.threads)
        results = run(size=size, device=device, progress=not args.no_progress)
    except (ValueError, RuntimeError) as error:
        print(f"attnlib.bench: {error}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x))
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
