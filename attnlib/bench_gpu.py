"""The benchmarks only a CUDA GPU runs (lesson 11), for :mod:`attnlib.bench`.

* ``sdpa_backend_ms``: torch's flash, memory-efficient and math SDPA backends on one long
  causal sequence in half precision, and ``sdpa_flash_vs_math`` (math's time ÷ flash's);
* ``gpt_mfu``: model FLOPs utilisation of :class:`attnlib.GPT` training at a GPT-2-small-sized
  configuration under bf16 (or fp16) autocast: the FLOPs the model needs per token
  (6·N for the matrix products, forward and backward, plus 12·layers·T·d for attention,
  the PaLM paper's count) times tokens per second, ÷ the GPU's dense peak from its data sheet.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from .gpt import GPT
from .measure import seconds, synchronize

# Dense bf16 tensor-core peaks from the vendors' data sheets (fp16 for GPUs without bf16), FLOP/s.
PEAK_FLOPS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12),
              ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12), ("V100", 125e12), ("T4", 65e12))


def bench_cuda(device, size) -> dict:
    """On CUDA: SDPA's flash, memory-efficient and math backends, and the GPT's model FLOPs utilisation."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    q, k, v = (torch.randn(8, 16, 2048, 64, device=device, dtype=dtype) for _ in range(3))  # (B, H, T, d)
    milliseconds = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("math", SDPBackend.MATH)):
        def call(backend=backend):
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, k, v, is_causal=True)
        try:
            milliseconds[name] = 1e3 * seconds(call, repeats=size["repeats"], device=device)
        except RuntimeError as error:  # this GPU has no such kernel for these inputs
            milliseconds[name] = None
            print(f"{name} backend unavailable: {str(error).splitlines()[0]}", file=sys.stderr)
    out = {"sdpa_backend_ms": milliseconds, "sdpa_backend_shape": "B=8, H=16, T=2048, d=64, causal, " + str(dtype)}
    if milliseconds.get("flash") and milliseconds.get("math"):
        out["sdpa_flash_vs_math"] = milliseconds["math"] / milliseconds["flash"]
    config = dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, d_model=768)
    if size.get("tiny"):
        config = dict(vocab_size=64, block_size=64, n_layer=2, n_head=2, d_model=64)
    out.update(_mfu(device, config, batch=8, dtype=dtype, steps=max(3, size["rounds"] // 2)))
    return out


def _mfu(device, config, batch, dtype, steps) -> dict:
    torch.manual_seed(0)
    model = GPT(**config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x, y = (torch.randint(0, config["vocab_size"], (batch, config["block_size"]), device=device) for _ in range(2))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            _, loss = model(x, y)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    tokens_per_s = steps * batch * config["block_size"] / (time.perf_counter() - start)
    n = model.num_parameters() - model.position_embedding.weight.numel()  # the tied matrix works as the head
    flops_per_token = 6 * n + 12 * config["n_layer"] * config["block_size"] * config["d_model"]  # PaLM's count
    name = torch.cuda.get_device_name(device)
    peak = next((flops for key, flops in PEAK_FLOPS if key in name), None)
    return {"gpt_mfu_config": {**config, "batch": batch, "dtype": str(dtype)}, "gpt_cuda_tokens_per_s": tokens_per_s,
            "gpt_achieved_tflops": tokens_per_s * flops_per_token / 1e12,
            "gpt_mfu": None if peak is None else tokens_per_s * flops_per_token / peak}
