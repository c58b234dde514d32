"""``make gpu-check``: run every master notebook on a CUDA GPU, then the benchmark, and report.

    python tools/gpu_check.py [--dry-run] [--only 05 10 ...] [--timeout 150] [--budget 480] [--json FILE]

Every lesson promises to scale up on a GPU; this proves it on one. For each master notebook
(``notebooks/solutions/*.ipynb``, found by glob, so new lessons join by themselves), in a fresh
Python process with ``ATTNLIB_DEVICE=cuda``, it executes the code cells in order **without a
Jupyter kernel** (a GPU machine may have no Jupyter packages and no package registry): the
notebook's JSON is read with the ``json`` module, IPython's line magics (the Colab-only
``%pip install``) and shell escapes become ``pass``, matplotlib draws to the non-interactive
``Agg`` backend, and every cell runs with ``exec`` in one namespace, as a kernel would. Then
``python -m attnlib.bench --device cuda --json`` runs. The report names the GPU, the torch and
CUDA versions, the mixed-precision dtype ``attnlib.train.fit`` picks, each notebook's time and
result (the failing cell and error, if any), and the benchmark's table.

It exits 1 if a notebook fails, the bench fails, or the whole run exceeds ``--budget`` seconds
(8 minutes by default), and 2 at once, with the reason, on a machine without CUDA or without
the packages the notebooks import. ``--dry-run`` needs no GPU: it checks that every cell of
every master can be converted and compiled, executes the smallest lesson on the CPU through
the same runner, and runs the benchmark at its smoke-test size (the test suite runs it).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MASTERS = ROOT / "notebooks" / "solutions"
NEEDED = ("torch", "numpy", "matplotlib", "tqdm")  # what attnlib and the notebooks import
MAGIC = re.compile(r"^(\s*)[%!]")  # an IPython line magic or shell escape, e.g. `    %pip install ...`
RESULT = "GPU-CHECK-RESULT "


# ----- turning a cell into Python -------------------------------------------------------------
def cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def to_python(source: str) -> str:
    """A code cell as plain Python: line magics and shell escapes become ``pass`` (indentation kept).

    A cell magic (``%%time`` ...) on the first line is dropped, and the cell body runs as it is.
    """
    lines = source.splitlines()
    if lines and lines[0].startswith("%%"):
        lines = lines[1:]
    return "\n".join(MAGIC.sub(r"\1pass  # IPython magic skipped: ", line, count=1) if MAGIC.match(line) else line
                     for line in lines)


def code_cells(path: Path) -> list[tuple[int, str, bool]]:
    """(cell index, Python source, may it raise?) of every code cell of the notebook at ``path``.

    A cell tagged ``raises-exception`` fails on purpose (nbval and JupyterLab go on past it); so does this.
    """
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return [(i, to_python(cell_source(cell)), "raises-exception" in cell.get("metadata", {}).get("tags", []))
            for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"]


def notebooks(only: list[str] | None = None) -> list[Path]:
    paths = sorted(MASTERS.glob("*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in only)]
    return paths


# ----- running one notebook (in its own process) ----------------------------------------------
def run_notebook(path: Path) -> dict:
    """Execute ``path``'s code cells in one namespace; return what happened (no exception escapes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import warnings

    warnings.filterwarnings("ignore", message=".*non-interactive.*")  # plt.show() under Agg
    os.chdir(path.parent)  # as a kernel started next to the notebook
    namespace = {"__name__": "__main__", "display": print}
    start = time.perf_counter()
    cells = code_cells(path)
    for number, (index, source, may_raise) in enumerate(cells):
        try:
            exec(compile(source, f"{path.name} cell {index}", "exec"), namespace)
        except BaseException as error:  # noqa: BLE001 (a notebook's failure is the report's content)
            if may_raise and isinstance(error, Exception):
                continue  # it fails on purpose, as the tag says
            return {"notebook": path.name, "ok": False, "seconds": round(time.perf_counter() - start, 1),
                    "cell": index, "cells_run": number, "error": f"{type(error).__name__}: {error}"[:500]}
        finally:
            plt.close("all")
    return {"notebook": path.name, "ok": True, "seconds": round(time.perf_counter() - start, 1), "cells_run": len(cells)}


def run_in_subprocess(path: Path, device: str, timeout: float) -> dict:
    env = {**os.environ, "ATTNLIB_DEVICE": device, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--run-one", str(path)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"notebook": path.name, "ok": False, "seconds": round(time.perf_counter() - start, 1),
                "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT):
            result = json.loads(line[len(RESULT):])
            result["process_seconds"] = round(time.perf_counter() - start, 1)
            return result
    tail = (done.stderr or done.stdout)[-500:]
    return {"notebook": path.name, "ok": False, "seconds": round(time.perf_counter() - start, 1),
            "error": f"the runner exited with {done.returncode}: {tail}"}


# ----- checks before running -----------------------------------------------------------------
def missing_packages() -> list[str]:
    import importlib.util

    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def cuda_problem() -> str | None:
    """Why this machine cannot run the GPU check, or None."""
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU-only build)"
        return (f"make gpu-check needs a CUDA GPU, and torch.cuda.is_available() is False here (torch "
                f"{torch.__version__}, built with CUDA {built}). Run it on a machine with an NVIDIA GPU and a CUDA "
                "build of torch; `python tools/gpu_check.py --dry-run` checks the plan on a CPU.")
    return None


def environment(device: str) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from attnlib.train.loop import _resolve_precision

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["amp_dtype"] = {"bf16": "bfloat16", "fp16": "float16 (with a gradient scaler)"}[
            _resolve_precision("auto", torch.device(device))]
    else:
        info["amp_dtype"] = "none (float32 on a CPU)"
    return info


def validate_plan(paths: list[Path]) -> list[str]:
    """Every cell of every notebook converts and compiles; returns the problems found."""
    problems = []
    for path in paths:
        try:
            cells = code_cells(path)
        except (ValueError, KeyError) as error:
            problems.append(f"{path.name}: not a notebook ({error})")
            continue
        for index, source, _ in cells:
            try:
                ast.parse(source, f"{path.name} cell {index}")
            except SyntaxError as error:
                problems.append(f"{path.name} cell {index}: {error}")
    return problems


# ----- the benchmark and the report ------------------------------------------------------------
def run_bench(device: str, json_path: Path, tiny: bool, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    command = [sys.executable, "-m", "attnlib.bench", "--device", device, "--json", str(json_path), "--no-progress"]
    start = time.perf_counter()
    try:
        done = subprocess.run(command + (["--tiny"] if tiny else []), env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "seconds": round(time.perf_counter() - start, 1), "table": "",
                "error": f"timed out after {timeout:.0f} s"}
    return {"ok": done.returncode == 0, "seconds": round(time.perf_counter() - start, 1), "table": done.stdout.strip(),
            "error": None if done.returncode == 0 else done.stderr[-1000:],
            "figures": json.loads(json_path.read_text()) if done.returncode == 0 and json_path.exists() else None}


def report(info: dict, results: list[dict], bench: dict | None, total: float, budget: float) -> str:
    lines = ["# gpu-check", "",
             f"- device: {info.get('gpu', info['device'])}",
             f"- torch {info['torch']} (CUDA {info['cuda']}), Python {info['python']}",
             f"- mixed precision in attnlib.train.fit: {info['amp_dtype']}", "",
             "| notebook | seconds | result |", "|---|---|---|"]
    for r in results:
        outcome = "ok" if r["ok"] else f"FAILED at cell {r.get('cell', '?')}: {r['error']}"
        lines.append(f"| {r['notebook']} | {r['seconds']:.1f} | {outcome} |")
    if bench is not None:
        lines += ["", f"## python -m attnlib.bench ({bench['seconds']:.0f} s)", "",
                  bench["table"] if bench["ok"] else f"FAILED: {bench['error']}"]
    failed = [r["notebook"] for r in results if not r["ok"]] + (["bench"] if bench is not None and not bench["ok"] else [])
    verdict = "all passed" if not failed else f"FAILED: {', '.join(failed)}"
    over = f"; over the {budget:.0f} s budget" if total > budget else ""
    lines += ["", f"**{verdict}** in {total:.0f} s{over}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="no GPU needed: check the plan, run one lesson on CPU")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. --only 05 10")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds allowed per notebook")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds allowed for everything")
    parser.add_argument("--json", help="also write the report's figures to this file")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)  # the child process: one notebook
    args = parser.parse_args(argv)
    if args.run_one:
        print(RESULT + json.dumps(run_notebook(Path(args.run_one))), flush=True)
        return 0

    missing = missing_packages()
    if missing:
        print(f"gpu-check: this Python ({sys.executable}) lacks {', '.join(missing)}, which attnlib and the "
              "notebooks import. Install them (without a registry: `pip download` the wheels on a connected "
              "machine, then `pip install --no-index --find-links DIR ...`).", file=sys.stderr)
        return 2
    paths = notebooks(args.only)
    if not paths:
        print(f"gpu-check: no master notebooks found in {MASTERS}" + (f" for --only {args.only}" if args.only else ""),
              file=sys.stderr)
        return 2
    problems = validate_plan(paths)
    if problems:
        print("gpu-check: cells that cannot run without a kernel:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if args.dry_run:
        device, paths = "cpu", [min(paths, key=lambda p: len(code_cells(p)))]  # the smallest lesson, on the CPU
    else:
        problem = cuda_problem()
        if problem:
            print(f"gpu-check: {problem}", file=sys.stderr)
            return 2
        device = "cuda"
    info = environment(device)
    print(f"gpu-check: {len(paths)} notebook(s) on {info.get('gpu', device)}, then the benchmark", file=sys.stderr)
    start = time.perf_counter()
    results = []
    for path in paths:
        result = run_in_subprocess(path, device, args.timeout)
        results.append(result)
        print(f"  {path.name}: {'ok' if result['ok'] else 'FAILED'} in {result['seconds']:.1f} s", file=sys.stderr)
    bench_json = Path(args.json).with_suffix(".bench.json") if args.json else Path(tempfile.mkdtemp()) / "bench.json"
    bench = run_bench(device, bench_json, tiny=args.dry_run, timeout=max(60.0, args.budget - (time.perf_counter() - start)))
    total = time.perf_counter() - start
    print(report(info, results, bench, total, args.budget))
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": info, "notebooks": results, "bench": bench,
                                               "seconds": round(total, 1)}, indent=2) + "\n")
    ok = all(r["ok"] for r in results) and bench["ok"] and total <= args.budget
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
