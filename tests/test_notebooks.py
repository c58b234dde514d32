"""The notebooks' structure: clean, generated, the shared setup cell, the exercise format.

nbval runs every notebook (masters and learner versions); these tests check what
running cannot: that the files are what the generator makes and follow COURSE.md.
"""

import re
import subprocess
import sys

import pytest

from tests.notebook_tools import LEARNERS, MASTERS, ROOT, learner_paths, master_paths, read

sys.path.insert(0, str(ROOT / "tools"))
import build_notebooks  # noqa: E402

MASTER_NAMES = [p.name for p in master_paths()]
ALL_NOTEBOOKS = master_paths() + learner_paths()


def ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def test_there_are_lessons_and_each_has_a_learner_version():
    assert MASTER_NAMES, "no master notebooks found"
    assert [p.name for p in learner_paths()] == MASTER_NAMES


def test_lessons_are_numbered_in_sequence():
    numbers = [int(name[:2]) for name in MASTER_NAMES]
    assert numbers == list(range(len(numbers))), MASTER_NAMES
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", name) for name in MASTER_NAMES)


def test_committed_learner_notebooks_equal_generated_ones():
    """`make notebooks` would change nothing: learner notebooks, masters and README's table."""
    for path, text in build_notebooks.planned_files().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} differs from what the generator makes; run `make notebooks`"
        )
    assert build_notebooks.stale_learner_notebooks() == []


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_committed_without_outputs(path):
    for i, cell in enumerate(read(path).cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"cell {i} carries outputs"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_setup_cell_is_identical_everywhere(path):
    nb = read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "setup" in code[0].metadata.get("tags", []), "the first code cell must be the setup cell"
    assert code[0].source == build_notebooks.setup_source()
    assert sum("setup" in c.metadata.get("tags", []) for c in nb.cells) == 1


def test_setup_cell_installs_this_release_from_the_repository_named_once():
    url = build_notebooks.repository_url()
    setup = build_notebooks.setup_source()
    version = build_notebooks._project()["version"]
    assert f'%pip install -q "attnlib @ git+{url}.git@v{version}"' in setup  # Colab gets the notebooks' release
    assert 'if "google.colab" in sys.modules:' in setup
    assert "-e " not in setup  # not an editable install on Colab
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    generated = {"README.md"} | {p.relative_to(ROOT).as_posix() for p in ALL_NOTEBOOKS}
    written = sorted({name for name in listed if (ROOT / name).is_file() and name not in generated
                      and url in (ROOT / name).read_text(encoding="utf-8", errors="ignore")})
    assert written == ["pyproject.toml"], f"the repository URL must be set only in pyproject.toml: {written}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for start, end in ((build_notebooks.TABLE_START, build_notebooks.TABLE_END),
                       (build_notebooks.INSTALL_START, build_notebooks.INSTALL_END),
                       (build_notebooks.BINDER_START, build_notebooks.BINDER_END)):
        readme = readme.split(start)[0] + readme.split(end)[-1]
    assert url not in readme, "README.md names the repository outside its generated blocks"
    assert f'pip install "attnlib[grading] @ git+{url}.git@v{version}"' in build_notebooks.grading_install_block()


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_badge_opens_this_notebook_in_colab(path):
    first = read(path).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# Lesson ")
    relative = path.relative_to(ROOT).as_posix()
    assert build_notebooks.badge(relative) in first.source


def exercise_cells(nb):
    solutions = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    checks = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    return solutions, checks


@pytest.mark.parametrize("name", MASTER_NAMES)
def test_masters_follow_the_exercise_format(name):
    nb = read(MASTERS / name)
    solutions, checks = exercise_cells(nb)
    assert 2 <= len(solutions) <= 4, f"{name}: {len(solutions)} exercises; the course wants 2-4"
    assert len(checks) == len(solutions)
    grade_ids = [c.metadata.nbgrader.grade_id for c in solutions + checks]
    assert len(set(grade_ids)) == len(grade_ids), "grade_ids must be unique"
    lesson = name[:2]
    for cell in solutions:
        meta = cell.metadata.nbgrader
        assert meta == {"grade": False, "solution": True, "locked": False, "task": False,
                        "grade_id": meta.grade_id, "schema_version": 3}
        assert meta.grade_id.startswith(f"ex{lesson}_")
        assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
    for cell in checks:
        meta = cell.metadata.nbgrader
        assert meta.locked and not meta.solution and meta.points > 0 and meta.schema_version == 3
        assert ".check(" in cell.source
        assert "raises-exception" not in cell.metadata.get("tags", []), "masters must fail loudly"
    for check in checks:  # a hint cell follows every check cell
        following = nb.cells[nb.cells.index(check) + 1]
        assert following.cell_type == "code" and ".hint()" in following.source


@pytest.mark.parametrize("name", MASTER_NAMES)
def test_learner_notebooks_have_stubs_and_tolerant_checks(name):
    nb = read(LEARNERS / name)
    solutions, checks = exercise_cells(nb)
    for cell in solutions:
        assert "BEGIN SOLUTION" not in cell.source
        label = build_notebooks.exercise_label(cell.metadata.nbgrader.grade_id)
        assert f'raise NotImplementedError("{label}: replace this line with your solution")' in cell.source
    for cell in checks:
        assert "raises-exception" in cell.metadata.get("tags", [])


@pytest.mark.parametrize("name", MASTER_NAMES)
def test_each_lesson_points_to_the_next(name):
    last = read(MASTERS / name).cells[-1]
    assert last.cell_type == "markdown" and "Summary" in last.source or "summary" in last.source.lower()
    following = f"{int(name[:2]) + 1:02d}_"
    nxt = [n for n in MASTER_NAMES if n.startswith(following)]
    if nxt:
        assert f"({nxt[0]})" in last.source, f"{name} should link to {nxt[0]}"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_links_to_notebooks_resolve(path):
    for cell in read(path).cells:
        if cell.cell_type == "markdown":
            for target in re.findall(r"\]\(([^)\s]+\.ipynb)\)", cell.source):
                if "://" not in target:
                    assert (path.parent / target).exists(), f"{path.name} links to missing {target}"
