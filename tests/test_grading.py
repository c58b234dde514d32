"""Grading that instructors can trust: nbgrader releases, the clean room, feedback, end to end.

The end-to-end test runs nbgrader's own command line exactly as the README tells an
instructor to, with the README's own ``nbgrader_config.py``: ``generate_assignment``,
``autograde`` of seven submissions (solved, empty, half solved with typical mistakes, and
four attempts to fake a pass), ``generate_feedback`` and ``export``.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from attnlib.grading.cleanroom import clean_notebook, definitions_only, modified_installation, suspicious_lines
from attnlib.grading.feedback import figure_alt_text
from attnlib.grading.release import learner_version
from tests.notebook_tools import LEARNERS, MASTERS, ROOT, master_paths, read

LESSON = "02_softmax_and_attention.ipynb"
BIN = Path(sys.executable).parent


# ----- the clean room's view of a solution cell -------------------------------------------------
def test_definitions_only_keeps_definitions_and_drops_patches():
    source = '''
import math
from attnlib.exercises import _core as c
EPS = 1e-8
c.Exercise.check = lambda self, fn: print("✓ looks fine")
torch.testing.assert_close = lambda *a, **k: None
%time x = 1
def f(x: "annotation", eps=EPS * 2, *, scale=-1.0) -> torch.Tensor:
    """Docstring."""
    return x * scale
@torch.no_grad()
def g(x):
    return x
@(lambda fn: print("runs at definition") or fn)
def h(x):
    return x
def sneaky(x, y=print("runs at definition")):
    return x
class M(nn.Module):
    size: int = 3
    print("a class body runs at definition")
    def forward(self, x):
        return x
class Meta(nn.Module, metaclass=type):
    pass
for i in range(3):
    pass
'''
    kept, dropped = definitions_only(source)
    namespace = {}
    import torch
    from torch import nn

    exec(kept, {"torch": torch, "nn": nn, "print": pytest.fail}, namespace)  # nothing runs but definitions
    assert {"math", "c", "EPS", "f", "g", "h", "M"} <= set(namespace)
    assert "sneaky" not in namespace and "Meta" not in namespace
    assert namespace["f"](2.0) == -2.0 and namespace["h"](3) == 3
    assert any("Exercise.check" in d for d in dropped) and any("assert_close" in d for d in dropped)
    assert "@torch.no_grad()" in kept and "lambda fn" not in kept
    assert definitions_only("def broken(:\n")[0] == "def broken(:\n"  # its SyntaxError will show


def test_suspicious_lines_are_listed_for_the_instructor():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1\nimport attnlib.exercises._core as c"),
        nbformat.v4.new_code_cell("get_ipython().showtraceback = lambda *a, **k: None"),
        nbformat.v4.new_code_cell("torch.testing.assert_close = lambda *a, **k: None"),
    ])
    found = suspicious_lines(nb)
    assert [line.split(":")[0] for line in found] == ["cell 0", "cell 1", "cell 2"]


def test_figures_get_alt_text_from_their_titles():
    assert figure_alt_text('ax.set_title("Training loss")\nplt.suptitle(f"Softmax at T = {T}")') == \
        "Figure: Training loss; Softmax at T = …"
    assert figure_alt_text("plt.plot(x)") == "Figure drawn by the code of this cell"


def test_an_editable_install_is_not_reported_as_modified():
    assert modified_installation() == []


def test_the_clean_notebook_holds_prelude_definitions_and_checks_only():
    master = read(MASTERS / LESSON)
    clean = clean_notebook(master)
    sources = [c.source for c in clean.cells]
    assert "from attnlib.exercises import lesson02" in sources[0]
    checks = [c for c in master.cells if c.metadata.get("nbgrader", {}).get("grade")]
    solutions = [c for c in master.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert len(clean.cells) == 1 + len(checks) + len(solutions)
    assert not any("plt.show()" in s for s in sources[1:])  # no lesson cell comes along


def _run_in_clean_namespace(nb) -> dict:
    """What the clean room does, in this process: prelude, solution definitions, then each check."""
    clean = clean_notebook(nb)
    namespace = {}
    verdicts = {}
    for cell in clean.cells:
        if "grade_id" not in cell.metadata:
            exec(compile(cell.source, "<clean room>", "exec"), namespace)
            continue
        try:
            exec(compile(cell.source, cell.metadata["grade_id"], "exec"), namespace)
            verdicts[cell.metadata["grade_id"]] = "pass"
        except AssertionError as failure:
            verdicts[cell.metadata["grade_id"]] = str(failure)
    return verdicts


@pytest.mark.parametrize("path", master_paths(), ids=[p.name for p in master_paths()])
def test_each_lessons_solutions_pass_from_their_definitions_alone(path):
    """Solutions use only the setup's imports, their own cell and other solutions: the clean room grades them."""
    verdicts = _run_in_clean_namespace(read(path))
    assert verdicts and all(v == "pass" for v in verdicts.values()), verdicts


@pytest.mark.parametrize("path", master_paths(), ids=[p.name for p in master_paths()])
def test_each_learner_stub_is_reported_as_not_attempted(path):
    verdicts = _run_in_clean_namespace(read(LEARNERS / path.name))
    assert verdicts and all("not attempted yet" in v or "not written yet" in v for v in verdicts.values()), verdicts


# ----- releases equal the learner notebooks ---------------------------------------------------
def _course(tmp_path) -> Path:
    """A course folder with the README's nbgrader_config.py."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    config = re.search(r"```python\n(# nbgrader_config\.py\n.*?)```", readme, re.S)
    assert config, "README.md must show the nbgrader_config.py to use, in a ```python block"
    (tmp_path / "nbgrader_config.py").write_text(config.group(1))
    return tmp_path


def _nbgrader(course: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _comparable(cell) -> dict:
    grading = {k: v for k, v in cell.metadata.get("nbgrader", {}).items() if k not in ("checksum", "cell_type")}
    return {"type": cell.cell_type, "source": cell.source, "tags": sorted(cell.metadata.get("tags", [])),
            "nbgrader": grading, "outputs": cell.get("outputs", [])}


def test_generate_assignment_releases_exactly_the_learner_notebooks(tmp_path):
    course = _course(tmp_path)
    source = course / "source" / "all"
    source.mkdir(parents=True)
    for path in master_paths():
        shutil.copy(path, source / path.name)
    _nbgrader(course, "generate_assignment", "all", "--force")
    for path in master_paths():
        released = nbformat.read(course / "release" / "all" / path.name, as_version=4)
        learner = read(LEARNERS / path.name)
        assert len(released.cells) == len(learner.cells), path.name
        for index, (ours, theirs) in enumerate(zip(released.cells, learner.cells)):
            assert _comparable(ours) == _comparable(theirs), f"{path.name}, cell {index}"
        assert learner_version(read(path)).cells[0].source == learner.cells[0].source  # the learner's badge
        assert "/notebooks/solutions/" not in released.cells[0].source


# ----- end to end: seven submissions ----------------------------------------------------------
def _solution_sources(nb) -> dict:
    return {c.metadata.nbgrader.grade_id: c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def _points(nb) -> dict:
    return {c.metadata.nbgrader.grade_id: c.metadata.nbgrader.points for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade")}


WRONG_2_2 = '''def local_causal_mask(size, window, device=None):
    """A typical mistake: off by one, the window holds window + 1 positions."""
    i = torch.arange(size, device=device)[:, None]
    j = torch.arange(size, device=device)[None, :]
    return (j <= i) & (j >= i - window)
'''
# Attacks, each added to an otherwise unsolved or wrong submission.
CHEAT_CHECK = ("import attnlib.exercises._core as _c; "
               "_c.Exercise.check = lambda self, fn: print('✓ looks fine')\n")  # the one line
CHEAT_COMPARE = ("import builtins, torch\n"
                 "torch.testing.assert_close = lambda *a, **k: None\n"
                 "torch.allclose = lambda *a, **k: True\n"
                 "torch.equal = lambda *a, **k: True\n"
                 "class AssertionError(Exception): pass\n"
                 "builtins.AssertionError = AssertionError\n"
                 "builtins.print = lambda *a, **k: None\n")
CHEAT_DISPLAY = "get_ipython().showtraceback = lambda *a, **k: None\n"  # hides every error from nbgrader
CHEAT_INSIDE = '''def attention_scale(d_k, sigma):
    import attnlib.exercises._core as c
    c.Trial.expect_number = lambda self, got, expected, what, **k: got
    c.Trial.expect = lambda self, condition, message: None
    return 1.0  # wrong
'''


def _submission(release, solutions: dict, first_cell_prefix: str = "") -> object:
    nb = nbformat.from_dict(json.loads(json.dumps(release)))  # a deep copy
    first = True
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            if grade_id in solutions:
                cell.source = solutions[grade_id]
            if first:
                cell.source = first_cell_prefix + cell.source
                first = False
    return nb


@pytest.mark.slow
def test_autograde_feedback_and_export_end_to_end(tmp_path):
    course = _course(tmp_path)
    (course / "source" / "ps02").mkdir(parents=True)
    shutil.copy(MASTERS / LESSON, course / "source" / "ps02" / LESSON)
    _nbgrader(course, "generate_assignment", "ps02", "--force")
    release = nbformat.read(course / "release" / "ps02" / LESSON, as_version=4)
    master = read(MASTERS / LESSON)
    solved, points = _solution_sources(master), _points(master)
    check_ids = {g.removesuffix("_check"): g for g in points}  # solution id -> its check's id

    half = {**solved, "ex02_2_local_mask": WRONG_2_2}
    half.pop("ex02_1_scale")  # left unsolved
    wrong_everywhere = {g: s.replace("### BEGIN SOLUTION", "### BEGIN SOLUTION\n    return None  # wrong")
                        for g, s in solved.items()}
    submissions = {
        "solved": _submission(release, solved),
        "empty": _submission(release, {}),
        "half": _submission(release, half),
        "cheat_check": _submission(release, {}, CHEAT_CHECK),
        "cheat_compare": _submission(release, wrong_everywhere, CHEAT_COMPARE),
        "cheat_display": _submission(release, wrong_everywhere, CHEAT_DISPLAY),
        "cheat_inside": _submission(release, {"ex02_1_scale": CHEAT_INSIDE}),
    }
    for student, nb in submissions.items():
        folder = course / "submitted" / student / "ps02"
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / LESSON)

    _nbgrader(course, "autograde", "ps02", "--create", "--force")
    _nbgrader(course, "generate_feedback", "ps02", "--force")
    _nbgrader(course, "export")

    with open(course / "grades.csv", newline="") as f:
        scores = {row["student_id"]: float(row["raw_score"]) for row in csv.DictReader(f)}
    total = sum(points.values())
    expected_half = points[check_ids["ex02_3_from_torch_masks"]]  # only 2.3 is right
    assert scores == {"solved": total, "empty": 0.0, "half": expected_half, "cheat_check": 0.0,
                      "cheat_compare": 0.0, "cheat_display": 0.0, "cheat_inside": 0.0}, scores

    # Feedback: each failure explained once, no file paths of this machine, no hint output, alt text.
    html = (course / "feedback" / "half" / "ps02" / LESSON.replace(".ipynb", ".html")).read_text()
    assert html.count("✗ Exercise 2.2") == 1 and html.count("✓ Exercise 2.3") == 1
    assert "not attempted yet" in html and "Exercise 2.1" in html
    assert str(tmp_path) not in html and "site-packages" not in html
    assert "Hint 1/" not in html
    assert "No description has been provided for this image" not in html
    cheat = (course / "autograded" / "cheat_check" / "ps02" / LESSON)
    flagged = nbformat.read(cheat, as_version=4)
    outputs = "".join(o.get("text", "") for c in flagged.cells for o in c.get("outputs", []))
    assert "passed in the submitted notebook but fails when run again in a fresh kernel" in outputs
    assert "reach into the grading machinery" in outputs
