"""Run notebooks top to bottom and report each one's time and peak memory.

    python tools/notebook_times.py notebooks/solutions/04_seq2seq_bottleneck.ipynb [...]

For each notebook, in a fresh kernel started by a fresh process (so the figures are that
notebook's alone):

* ``wall``: seconds from the first cell to the last;
* ``cpu``: seconds of CPU the kernel used (user + system). With one thread per kernel,
  as under ``make test``, this is close to the wall time on an idle machine, and it
  hardly changes when other programs load the machine: the figure to compare with a
  lesson's time budget while the machine is busy;
* ``peak``: the kernel's largest resident set size (what Binder's memory limit counts).

The kernel runs with ``OMP_NUM_THREADS=1`` unless the variable is already set, like the
kernels of ``make test``. ``--json FILE`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def _run_one(path: str) -> dict:
    """Execute one notebook in this (fresh) process; the kernel is our child, so its usage is ours to read."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(Path(path).parent)}})
    start = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the kernel, reaped at shutdown
    peak_kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss // 1024
    return {"notebook": path, "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_mib": round(peak_kib / 1024)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    print(f"{'notebook':60} {'wall s':>7} {'cpu s':>7} {'peak MiB':>9}")
    for path in args.notebooks:
        done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                               f"import json, notebook_times; print(json.dumps(notebook_times._run_one({path!r})))"],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{path:60} FAILED\n{done.stderr[-3000:]}")
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{path:60} {row['wall_s']:7.1f} {row['cpu_s']:7.1f} {row['peak_mib']:9d}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
