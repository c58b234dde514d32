"""Build the course's web book: the lessons executed, read like a book (``make site``).

    python tools/build_site.py                 # every lesson, into docs/_build/html
    python tools/build_site.py --lessons 01    # only the lessons whose names start with 01
    python tools/build_site.py --out DIR       # somewhere else (sources, cache and HTML in DIR)

1. The start page is the README, with its lesson links pointing at the book's pages.
2. Each master notebook is copied with tags that shape its page: solution cells get
   ``hide-input`` (folded behind a "Show solution" button; masters are used, so no page
   shows a stub's traceback), hint cells are removed (the solution is right there).
3. Sphinx with myst-nb executes the copies through jupyter-cache, so a second build
   re-executes only the lessons whose code changed, with a kernel of the site's own whose
   progress bars print their final state as text (a widget's state does not survive in a
   static page).

The build reads nothing from the network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
MASTERS = ROOT / "notebooks" / "solutions"
KERNEL = "attention-site"
_HINT_CELL = re.compile(r"^\s*lesson\d\d\.\w+\.hint\(\)\s*$")
# Run by the site's kernel before a lesson: tqdm.auto would draw widgets, whose state a static
# page cannot keep; instead each bar prints its final state, once, when it closes.
_KERNEL_STARTUP = '''\
import io
import sys

import tqdm.auto
import tqdm.std


class _FinalStateBar(tqdm.std.tqdm):
    """A progress bar for a page: silent while it runs, its last state printed when it closes."""

    def __init__(self, *args, **kwargs):
        kwargs["file"] = io.StringIO()  # the running redraws go nowhere
        kwargs.setdefault("ascii", False)  # block characters, as on a terminal
        super().__init__(*args, **kwargs)

    def close(self):
        final = None if self.disable or not self.leave else str(self)
        super().close()
        if final:
            print(final, file=sys.stderr)


tqdm.auto.tqdm = _FinalStateBar
tqdm.auto.trange = lambda *args, **kwargs: _FinalStateBar(range(*args), **kwargs)
'''


def page_of(master: Path):
    """A master notebook as its page: solutions folded, hints removed, run by the site kernel."""
    nb = nbformat.read(master, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if cell.metadata.get("nbgrader", {}).get("solution"):
            tags.append("hide-input")
        elif cell.cell_type == "code" and _HINT_CELL.match(cell.source):
            tags.append("remove-cell")
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3 (course site)", "language": "python"}
    return nb


def start_page(lessons: list[str]) -> str:
    """The README as the book's start page, lesson links pointing at pages, and the lessons' table of contents."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    readme = re.sub(r"\]\(notebooks/solutions/(\d\d_\w+)\.ipynb\)", r"](\1.ipynb)", readme)
    readme = re.sub(r"\]\(notebooks/(\d\d_\w+)\.ipynb\)", r"](\1.ipynb)", readme)
    toctree = "\n".join(["```{toctree}", ":maxdepth: 1", ":caption: Lessons", "", *lessons, "```"])
    return readme + "\n\n" + toctree + "\n"


def write_kernel(folder: Path) -> None:
    """The site's kernelspec under ``folder/kernels`` (found through JUPYTER_PATH)."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "startup.py").write_text(_KERNEL_STARTUP)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
            f"--IPKernelApp.exec_files={spec / 'startup.py'}"]
    (spec / "kernel.json").write_text(json.dumps({
        "argv": argv, "display_name": "Python 3 (course site)", "language": "python",
        "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline"},
    }, indent=1))


def _write_if_changed(path: Path, text: str) -> None:
    """Leave unchanged files untouched, so that Sphinx does not read them again."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", nargs="*", help="lesson numbers to include, e.g. 00 01 (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "_build", help="build folder")
    args = parser.parse_args(argv)

    masters = [p for p in sorted(MASTERS.glob("*.ipynb")) if not args.lessons or p.name[:2] in args.lessons]
    if not masters:
        parser.error(f"no lesson matches {args.lessons}")
    out = args.out.resolve()
    source = out / "src"
    source.mkdir(parents=True, exist_ok=True)
    for stale in set(source.glob("*.ipynb")) - {source / p.name for p in masters}:
        stale.unlink()
    for master in masters:
        _write_if_changed(source / master.name, nbformat.writes(page_of(master)) + "\n")
    _write_if_changed(source / "index.md", start_page([p.stem for p in masters]))
    write_kernel(out / "jupyter")

    env = {**os.environ, "JUPYTER_PATH": str(out / "jupyter"), "ATTNLIB_SITE_CACHE": str(out / "jupyter_cache"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    start = time.perf_counter()
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(ROOT / "docs"), "--keep-going", "-q",
               str(source), str(out / "html")]
    done = subprocess.run(command, env=env)
    print(f"site: {len(masters)} lesson(s) in {time.perf_counter() - start:.0f} s -> {out / 'html' / 'index.html'}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
