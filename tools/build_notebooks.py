"""Build the learner notebooks from the master notebooks (``make notebooks``).

The masters in ``notebooks/solutions/`` are the source of truth: full solutions and
nbgrader (schema 3) metadata, ready for nbgrader's ``source/`` folder. For each master
this script

1. stamps the shared parts into the master itself: the "Open in Colab" badge (pointing
   at the master) and the setup cell (tagged ``setup``), and strips outputs;
2. writes the learner notebook ``notebooks/<name>.ipynb`` with
   ``attnlib.grading.release.learner_version``: each solution becomes a stub that names
   the exercise, check cells get the ``raises-exception`` tag so "Run all" goes on past an
   unsolved exercise, outputs are cleared, and the badge points at the learner notebook.
   nbgrader's ``generate_assignment``, configured by ``attnlib.grading.configure``, runs
   the same preprocessors, so an instructor's release equals these notebooks.

It also rewrites three generated blocks of ``README.md``: the lesson table (between the
``lessons:start`` and ``lessons:end`` markers), from the masters' titles with a badge for
each lesson; the grading install line (``install:start`` … ``install:end``); and the
Binder badge (``binder:start`` … ``binder:end``).

The repository address comes from ``[project.urls] Repository`` in ``pyproject.toml``,
the only place it is written, and the version from ``[project] version``: Colab and
graders install exactly that release (the git tag ``v<version>``). ``--check`` changes
nothing and exits 1 if any file differs from what would be written (the test suite uses
the same functions).
"""

from __future__ import annotations

import argparse
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import nbformat
from nbgrader.preprocessors import ClearOutput

from attnlib.grading.release import BADGE_PATTERN, exercise_label, learner_version  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parents[1]
MASTERS = ROOT / "notebooks" / "solutions"
LEARNERS = ROOT / "notebooks"
BRANCH = "main"

SETUP_TEMPLATE = '''\
# Setup: the same cell opens every lesson. On Colab it first installs attnlib
# (the course's package) without touching Colab's own torch and numpy.
import sys

if "google.colab" in sys.modules:
    %pip install -q "{requirement}"

import matplotlib.pyplot as plt
import numpy as np
import torch

import attnlib

device = attnlib.get_device()
attnlib.seed_everything(0)
print(attnlib.describe_environment(device))'''

def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def repository_url() -> str:
    """The course repository's address, read from pyproject.toml."""
    return _project()["urls"]["Repository"].rstrip("/").removesuffix(".git")


def release_tag() -> str:
    """The git tag of the release these notebooks belong to: ``v`` + pyproject's version."""
    return f"v{_project()['version']}"


def requirement(extra: str = "") -> str:
    """The pip requirement for attnlib at this release, e.g. ``attnlib @ git+https://...git@v0.2.0``."""
    return f"attnlib{extra} @ git+{repository_url()}.git@{release_tag()}"


def setup_source() -> str:
    """The exact source of the setup cell every notebook must carry."""
    return SETUP_TEMPLATE.format(requirement=requirement())


def badge(path_in_repo: str) -> str:
    """Markdown for an "Open in Colab" badge that opens ``path_in_repo``."""
    slug = repository_url().removeprefix("https://github.com/")
    target = f"https://colab.research.google.com/github/{slug}/blob/{BRANCH}/{path_in_repo}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({target})"


def _stamp_shared_cells(nb, path_in_repo: str, name: str) -> None:
    """Put the badge and the setup cell into ``nb`` (in place)."""
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown" or not BADGE_PATTERN.search(first.source):
        raise ValueError(f"{name}: the first cell must be markdown with an 'Open In Colab' badge")
    first.source = BADGE_PATTERN.sub(lambda _: badge(path_in_repo), first.source)
    setup_cells = [c for c in nb.cells if "setup" in c.metadata.get("tags", [])]
    if len(setup_cells) != 1 or setup_cells[0].cell_type != "code":
        raise ValueError(f"{name}: exactly one code cell must carry the 'setup' tag")
    setup_cells[0].source = setup_source()


def _clear_outputs(nb):
    nb, _ = ClearOutput().preprocess(nb, {})
    return nb


def normalized_master(path: Path):
    """The master notebook as it should be committed: badge, setup cell, no outputs."""
    nb = nbformat.read(path, as_version=4)
    _stamp_shared_cells(nb, f"notebooks/solutions/{path.name}", path.name)
    for cell in nb.cells:
        grading = cell.metadata.get("nbgrader", {})
        if grading.get("solution"):
            _require_stub_inside_function(cell, path.name)
    return _clear_outputs(nb)


def _require_stub_inside_function(cell, name: str) -> None:
    """A solution must be a function body, so its stub does not raise when the cell runs."""
    for line in cell.source.splitlines():
        if "BEGIN SOLUTION" in line and not line.startswith((" ", "\t")):
            grade_id = cell.metadata["nbgrader"].get("grade_id")
            raise ValueError(
                f"{name}: the solution of {grade_id} is not inside a function; the learner's stub "
                "would raise as soon as the cell runs"
            )


def render(nb) -> str:
    """The exact text a notebook is committed as."""
    return nbformat.writes(nb) + "\n"


def planned_files() -> dict[Path, str]:
    """Every generated file (masters, learner notebooks, README) with the text it should have."""
    files: dict[Path, str] = {}
    masters = {}
    for path in sorted(MASTERS.glob("*.ipynb")):
        master = normalized_master(path)
        masters[path.name] = master
        files[path] = render(master)
        files[LEARNERS / path.name] = render(learner_version(master))
    readme = readme_with_block(README.read_text(encoding="utf-8"), TABLE_START, TABLE_END, lessons_table(masters))
    readme = readme_with_block(readme, INSTALL_START, INSTALL_END, grading_install_block())
    readme = readme_with_block(readme, BINDER_START, BINDER_END, binder_badge())
    files[README] = readme
    return files


README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- lessons:start -->", "<!-- lessons:end -->"
INSTALL_START, INSTALL_END = "<!-- install:start -->", "<!-- install:end -->"
BINDER_START, BINDER_END = "<!-- binder:start -->", "<!-- binder:end -->"


def binder_badge() -> str:
    """The README's Binder badge: the course in JupyterLab, built from ``binder/``, opened at lesson 00."""
    slug = repository_url().removeprefix("https://github.com/")
    target = f"https://mybinder.org/v2/gh/{slug}/{BRANCH}?urlpath=lab/tree/notebooks/00_welcome.ipynb"
    return f"[![Binder](https://mybinder.org/badge_logo.svg)]({target})"


def grading_install_block() -> str:
    """The README's install line for a grading environment, pinned to this release."""
    return f'```bash\npip install "{requirement("[grading]")}"\n```'


def lesson_title(nb) -> str:
    """``# Lesson 02 · Softmax and ...`` → ``Softmax and ...``."""
    heading = nb.cells[0].source.splitlines()[0]
    return heading.removeprefix("# ").split("·", 1)[-1].strip()


def lessons_table(masters: dict[str, object]) -> str:
    """The README's lesson table: number, title, Colab badge, learner and master notebooks."""
    rows = ["| # | lesson | open | notebook | with solutions |", "|---|---|---|---|---|"]
    for name, nb in masters.items():
        rows.append(
            f"| {name[:2]} | {lesson_title(nb)} | {badge(f'notebooks/{name}')} "
            f"| [{name}](notebooks/{name}) | [solutions](notebooks/solutions/{name}) |"
        )
    return "\n".join(rows)


def readme_with_block(text: str, start_marker: str, end_marker: str, block: str) -> str:
    """``text`` with what stands between ``start_marker`` and ``end_marker`` replaced by ``block``."""
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"README.md must contain {start_marker} and {end_marker} around a generated block")
    return text[: start + len(start_marker)] + "\n" + block + "\n" + text[end:]


def stale_learner_notebooks() -> list[Path]:
    """Learner notebooks whose master no longer exists."""
    masters = {p.name for p in MASTERS.glob("*.ipynb")}
    return [p for p in sorted(LEARNERS.glob("*.ipynb")) if p.name not in masters]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is out of date")
    args = parser.parse_args(argv)

    outdated = []
    for path, text in planned_files().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        outdated.append(path.relative_to(ROOT))
        if not args.check:
            path.write_text(text, encoding="utf-8")
    stale = stale_learner_notebooks()
    for path in stale:
        outdated.append(path.relative_to(ROOT))
        if not args.check:
            path.unlink()

    verb = "out of date" if args.check else "written"
    for path in outdated:
        print(f"{verb}: {path}")
    if not outdated:
        print("all notebooks up to date")
    return 1 if (args.check and outdated) else 0


if __name__ == "__main__":
    sys.exit(main())
