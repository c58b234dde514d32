"""Helpers for tests that look inside the notebooks."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
MASTERS = ROOT / "notebooks" / "solutions"
LEARNERS = ROOT / "notebooks"


def master_paths() -> list[Path]:
    return sorted(MASTERS.glob("*.ipynb"))


def learner_paths() -> list[Path]:
    return sorted(LEARNERS.glob("*.ipynb"))


def read(path: Path):
    return nbformat.read(path, as_version=4)


def load_derivations(name: str) -> dict:
    """Run the cells tagged ``derivation`` of master notebook ``name``; return their namespace.

    A lesson marks the cells that define its from-scratch functions with the tag
    ``derivation``. Those cells must only define things (no training, no plots; they may use torch, np, math, F, nn and
    attnlib), so a unit test can run them and compare each function with attnlib's version.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    nb = read(MASTERS / name)
    cells = [c for c in nb.cells if c.cell_type == "code" and "derivation" in c.metadata.get("tags", [])]
    if not cells:
        raise AssertionError(f"{name} has no cell tagged 'derivation'")
    import attnlib

    namespace = {"torch": torch, "np": np, "math": math, "F": F, "nn": torch.nn, "attnlib": attnlib}
    for cell in cells:
        exec(compile(cell.source, f"{name}:derivation", "exec"), namespace)
    return namespace


def exercise_solutions(name: str) -> dict:
    """Run the master's solution cells of notebook ``name`` in one namespace and return it.

    Solution cells only define functions, so the namespace holds the reference
    answers (a later exercise may call an earlier one's function, as in the notebook).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    import attnlib

    namespace = {"torch": torch, "np": np, "math": math, "F": F, "nn": torch.nn, "attnlib": attnlib}
    for cell in read(MASTERS / name).cells:
        grading = cell.metadata.get("nbgrader", {})
        if grading.get("solution"):
            exec(compile(cell.source, f"{name}:{grading['grade_id']}", "exec"), namespace)
    return namespace


def assert_check_passes(exercise, fn, capsys) -> None:
    """The checker accepts ``fn`` and prints its one success line."""
    exercise.check(fn)
    out = capsys.readouterr().out
    assert out.startswith(f"✓ Exercise {exercise.number}"), out


def assert_check_fails(exercise, fn, capsys, *fragments: str) -> str:
    """The checker rejects ``fn`` with an AssertionError whose message holds every one of ``fragments``.

    The message is shown once: nothing is printed, and a notebook displays the
    exception's text (wrapped) in place of a traceback.
    """
    import pytest

    with pytest.raises(AssertionError) as caught:
        exercise.check(fn)
    out = capsys.readouterr().out
    assert out == "", f"a failing check must print nothing (the message is the exception's): {out!r}"
    message = str(caught.value)
    shown = "\n".join(caught.value._render_traceback_())  # the same text, wrapped at 100 columns
    assert " ".join(shown.split()) == " ".join(message.split())
    assert message.startswith(f"✗ Exercise {exercise.number}"), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    return message


def _code_lines(text: str) -> list[str]:
    """Lines of code without comments, blanks, spaces or quote style, for comparing code and hints."""
    lines = []
    for line in text.splitlines():
        line = line.split("  #")[0].split("# ")[0] if not line.lstrip().startswith("#") else ""
        line = "".join(line.split()).replace('"', "'")
        if line:
            lines.append(line)
    return lines


def gives_whole_solution(hint: str, name: str, function: str) -> bool:
    """True when ``hint`` holds every line of the master's solution to ``function`` in notebook ``name``.

    COURSE.md: hints build up, and the last may show the key line, never the whole solution.
    """
    for cell in read(MASTERS / name).cells:
        if cell.metadata.get("nbgrader", {}).get("solution") and f"def {function}(" in cell.source:
            body = cell.source.split("### BEGIN SOLUTION", 1)[1].split("### END SOLUTION", 1)[0]
            solution = _code_lines(body)
            shown = "\n".join(_code_lines(hint))
            return bool(solution) and all(line in shown for line in solution)
    raise AssertionError(f"{name} has no solution cell defining {function}")


def assert_hints_build_up(exercise, capsys) -> None:
    """The exercise has 2–4 hints; each ``hint()`` shows the next, numbered, and past the last it repeats the last.

    COURSE.md: hints build up, one at a time, so a learner asks only for as much help as they need.
    """
    from attnlib.exercises._core import wrap

    exercise._hints_given = 0
    try:
        assert 2 <= len(exercise.hints) <= 4, f"{len(exercise.hints)} hints"
        for number in range(1, len(exercise.hints) + 2):
            exercise.hint()
            out = capsys.readouterr().out
            shown = min(number, len(exercise.hints))
            assert f"Hint {shown}/{len(exercise.hints)} for Exercise {exercise.number}" in out, out
            assert wrap(exercise.hints[shown - 1]) in out, out
    finally:
        exercise._hints_given = 0


def assert_last_hint_alone_fails(exercise, signature: str, capsys, **names) -> None:
    """A function made of ``signature`` and the last hint's lines, and nothing else, fails the check.

    The last hint may show the key line; copying it must still leave the learner work to do.
    ``names`` adds globals the hint's code may use beyond torch and math.
    """
    import pytest
    import torch

    namespace = {"torch": torch, "math": math, **names}
    body = "\n".join("    " + line for line in exercise.hints[-1].splitlines())
    exec(f"{signature}\n{body}", namespace)
    with pytest.raises(AssertionError):
        exercise.check(namespace["f"])
    capsys.readouterr()


def assert_check_is_quick_and_leaves_the_random_stream_alone(exercise, solution, capsys) -> None:
    """Checking the master's ``solution`` takes well under the few seconds a learner waits, and runs on its own seed.

    The check seeds its own generator, so the learner's random numbers after it are the ones they
    would have drawn without it. The time limit is generous: feedback on a busy laptop counts.
    """
    import time

    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)  # (3,): what the stream gives next without a check
    torch.manual_seed(123)
    start = time.perf_counter()
    exercise.check(solution)
    assert time.perf_counter() - start < 5.0
    torch.testing.assert_close(torch.rand(3), expected)  # (3,)
    capsys.readouterr()
