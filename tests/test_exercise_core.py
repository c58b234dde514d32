"""The checker machinery: every failure mode gets its own explanation, never a crash."""

import numpy as np
import pytest
import torch

from attnlib.exercises import Exercise
from attnlib.exercises import lesson00
from tests.notebook_tools import (
    MASTERS, assert_check_fails, assert_check_passes, assert_hints_build_up, exercise_solutions, gives_whole_solution,
    read,
)


def square(t, fn):
    x = t.randn(2, 3)
    got = t.call(fn, x)
    t.expect_tensor(got, x ** 2, "square(x)")
    t.expect(bool((got >= 0).all()), "squares must not be negative")


EXERCISE = Exercise("9.9", "square", square, hints=["first", "second"], success="squared.")


def verdict(fn, capsys):
    """The failure message: raised once, printed nowhere, and shown alone in place of a traceback."""
    with pytest.raises(AssertionError) as info:
        EXERCISE.check(fn)
    assert capsys.readouterr().out == ""  # shown once: as the exception, not printed as well
    shown = info.value._render_traceback_()  # what a notebook shows: the message alone, no frames or paths
    assert all(len(line) <= 100 for line in shown if not line.startswith(" ")), shown
    assert " ".join("\n".join(shown).split()) == " ".join(str(info.value).split())
    return str(info.value)


def test_success_prints_one_line(capsys):
    EXERCISE.check(lambda x: x ** 2)
    out = capsys.readouterr().out
    assert out == "✓ Exercise 9.9 (square): squared.\n"


def raise_not_implemented(x):
    raise NotImplementedError("Exercise 9.9: replace this line")


@pytest.mark.parametrize(
    "fn, expected",
    [
        (raise_not_implemented, "not attempted yet"),
        (lambda x: x.reshape(7), "raised an exception:\n  RuntimeError: shape '[7]' is invalid"),
        (lambda x: None, "is None. Did your function forget to `return`"),
        (lambda x: (x ** 2).tolist(), "is a list; a torch.Tensor was expected"),
        (lambda x: (x ** 2).numpy(), "is a numpy array"),
        (lambda x: (x ** 2).T, "has shape (3, 2); expected shape (2, 3)"),
        (lambda x: (x ** 2).double(), "has dtype torch.float64; expected dtype torch.float32"),
        (lambda x: x ** 2 / 0 * 0, "contains NaN at 6 position(s)"),
        (lambda x: x ** 2 + 1e30 * x ** 2 * 1e30, "contains infinity"),
        (lambda x: x ** 2 + 0.5, "wrong values: max absolute error 0.5"),
        ("not a function", "expected a function, got a str"),
    ],
)
def test_each_failure_mode_is_explained(fn, expected, capsys):
    printed = verdict(fn, capsys)
    assert printed.startswith("✗ Exercise 9.9 (square): ")
    assert expected in printed


def test_calling_another_unsolved_exercise_is_named(capsys):
    def uses_other_stub(x):
        raise NotImplementedError("Exercise 2.2 (masked softmax): replace this line with your solution")

    printed = verdict(uses_other_stub, capsys)
    assert "calls code that is not written yet: Exercise 2.2 (masked softmax)" in printed
    assert "not attempted" not in printed


def test_broken_property_is_named(capsys):
    def test(t, fn):
        t.expect(False, "rows must sum to one; row 2 sums to 0.7")

    with pytest.raises(AssertionError, match="rows must sum to one; row 2 sums to 0.7"):
        Exercise("9.8", "property", test, hints=["h"]).check(lambda x: x)


def test_a_result_that_breaks_the_checker_is_reported_not_raised(capsys):
    class Weird:  # a learner's strange return value the test itself trips over
        def __len__(self):
            raise RuntimeError("weird object")

    def test(t, fn):
        len(t.call(fn, 1))

    with pytest.raises(AssertionError, match="could not be checked"):
        Exercise("9.7", "weird", test, hints=["h"]).check(lambda x: Weird())


def test_learner_cannot_spoil_inputs_in_place(capsys):
    def squares_in_place(x):
        x.mul_(x)  # edits its argument
        return x

    EXERCISE.check(squares_in_place)  # the checker compared against untouched inputs
    assert "✓" in capsys.readouterr().out


def test_hints_advance_then_repeat_the_last(capsys):
    ex = Exercise("9.6", "hints", square, hints=["first", "second"])
    ex.hint(), ex.hint(), ex.hint()
    out = capsys.readouterr().out
    assert out.index("Hint 1/2") < out.index("first") < out.index("Hint 2/2") < out.index("second")
    assert out.count("second") == 2 and "last hint" in out


def test_expect_number(capsys):
    def test(t, fn):
        t.expect_number(t.call(fn), 2.0, "the answer")

    ex = Exercise("9.5", "number", test, hints=["h"])
    ex.check(lambda: np.float32(2.0))
    for bad, message in [(lambda: 3.0, "is 3, which is off by 1"), (lambda: "2", "is a str; a number"),
                         (lambda: float("nan"), "finite number"), (lambda: torch.ones(2), "a single number")]:
        with pytest.raises(AssertionError, match=message):
            ex.check(bad)


def test_lesson00_reference_solutions_pass(capsys):
    lesson00.vector_length.check(lambda x: torch.sqrt((x ** 2).sum(dim=-1)))
    lesson00.unit_vectors.check(lambda x: x / torch.sqrt((x ** 2).sum(-1, keepdim=True)).clamp_min(1e-12))
    assert capsys.readouterr().out.count("✓") == 2


def test_lesson00_master_solutions_pass(capsys):
    solutions = exercise_solutions("00_welcome.ipynb")
    assert_check_passes(lesson00.vector_length, solutions["vector_length"], capsys)
    assert_check_passes(lesson00.unit_vectors, solutions["unit_vectors"], capsys)


def test_lesson00_typical_mistakes(capsys):
    with pytest.raises(AssertionError, match="has shape \\(1,\\); expected shape \\(\\)"):
        lesson00.vector_length.check(lambda x: torch.sqrt((x ** 2).sum(dim=-1, keepdim=True)))
    with pytest.raises(AssertionError, match="wrong values"):
        lesson00.vector_length.check(lambda x: (x ** 2).sum(dim=-1))
    with pytest.raises(AssertionError, match="returns NaN when x holds a zero vector"):
        lesson00.unit_vectors.check(lambda x: x / torch.sqrt((x ** 2).sum(-1, keepdim=True)))
    assert_check_fails(lesson00.vector_length, lambda x: torch.sqrt((x ** 2).sum()), capsys,
                       "(2, 3, 4)", "has shape (); expected shape (2, 3)")
    assert_check_fails(lesson00.unit_vectors, lambda x: x / torch.sqrt((x ** 2).sum(-1)), capsys,
                       "raised an exception")
    assert_check_fails(lesson00.unit_vectors, lambda x: x / (x ** 2).sum(-1, keepdim=True), capsys,
                       "wrong values")


@pytest.mark.parametrize("name", ["vector_length", "unit_vectors"])
@pytest.mark.parametrize("answer", [None, "a string", 3.0, [1.0, 2.0], np.ones(3), torch.zeros(2, dtype=torch.long)])
def test_lesson00_checkers_explain_odd_answers(name, answer, capsys):
    message = assert_check_fails(getattr(lesson00, name), lambda x: answer, capsys)
    assert "could not be checked" not in message


def test_lesson00_failing_demo_fails_as_the_notebook_says(capsys):
    """Lesson 00 shows a failed check on purpose: the demo's wrong answer must really fail."""
    [cell] = [c for c in read(MASTERS / "00_welcome.ipynb").cells
              if c.cell_type == "code" and "vector_length_wrong" in c.source]
    assert "raises-exception" in cell.metadata.get("tags", [])  # so Run All goes on past it
    namespace = {"torch": torch}
    with pytest.raises(AssertionError, match="wrong values"):
        exec(compile(cell.source, "00_welcome.ipynb:demo", "exec"), namespace)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name", ["vector_length", "unit_vectors"])
def test_lesson00_hints_build_up_and_stop_short_of_the_solution(name, capsys):
    exercise = getattr(lesson00, name)
    assert_hints_build_up(exercise, capsys)
    assert not gives_whole_solution(exercise.hints[-1], "00_welcome.ipynb", name)


def test_checks_run_on_the_cpu_whatever_device_the_lesson_uses(monkeypatch, capsys):
    """A GPU grader and a laptop give the same grade: the trial's inputs are always on the CPU."""
    monkeypatch.setenv("ATTNLIB_DEVICE", "cuda")  # what a lesson would pick on a GPU machine
    seen = []

    def test(t, fn):
        seen.append(t.device)
        x = t.randn(3)
        t.expect_tensor(t.call(fn, x), x + 1, "plus_one(x)")

    Exercise("9.3", "plus one", test, hints=["h"]).check(lambda x: x + torch.ones(3))  # no device= needed
    assert seen == [torch.device("cpu")] and capsys.readouterr().out.startswith("✓")


def test_an_earlier_exercise_cannot_cost_a_later_one_its_points(capsys):
    """A later answer that calls an earlier (wrong) answer is checked with a correct one in its place."""

    def test(t, fn):
        x = t.randn(3)
        t.expect_tensor(t.call(fn, x), 2 * x**2, "twice_square(x)")

    later = Exercise("9.4", "twice a square", test, hints=["h"], uses={"my_square": lambda x: x**2})
    notebook = {}
    exec("def my_square(x):\n    return x ** 3  # the earlier exercise, wrong\n\n"
         "def twice_square(x):\n    return 2 * my_square(x)  # this exercise, right\n", notebook)
    later.check(notebook["twice_square"])
    out = capsys.readouterr().out
    assert out.startswith("✓ Exercise 9.4") and "my_square" in out, out
    assert notebook["my_square"](torch.tensor(2.0)) == 8  # the learner's own namespace is untouched

    exec("def twice_square(x):\n    return 3 * my_square(x)  # this exercise, wrong\n", notebook)
    with pytest.raises(AssertionError, match="wrong values"):
        later.check(notebook["twice_square"])
    exec("def twice_square(x):\n    return x * x * 2  # needs no helper: nothing is swapped\n", notebook)
    later.check(notebook["twice_square"])
    assert "standing in" not in capsys.readouterr().out


# ----- shared answer readers: whole_number and query_key_weights ------------------------------

def test_whole_number_takes_a_count_in_any_usual_form_and_names_what_is_wrong():
    from attnlib.exercises._core import Failure, whole_number

    assert [whole_number(v, "n") for v in (6, 6.0, torch.tensor(6))] == [6, 6, 6]
    for bad, fragment in ((None, "forget to `return`"), (True, "is True"), (6.5, "a float"), ("6", "a str")):
        with pytest.raises(Failure, match=fragment.replace("`", "\\`")):
            whole_number(bad, "n")


def test_query_key_weights_returns_a_cpu_pair_and_names_what_is_wrong():
    from attnlib.exercises._core import Failure, query_key_weights

    W = torch.eye(5, 3, requires_grad=True)  # (5, 3)
    W_Q, W_K = query_key_weights((W, W * 2), "f()", 5, "2 + 3")
    assert not W_Q.requires_grad and W_K.device.type == "cpu" and torch.equal(W_K, 2 * torch.eye(5, 3))
    cases = [(None, "forget to `return W_Q, W_K`"), (W, "expected a pair"),
             ((W, W.detach().numpy()), "W_K is a ndarray"), ((torch.eye(4, 3), W), "d_model = 2 \\+ 3 = 5"),
             ((W.double(), W), "dtype torch.float64"), ((W * float("nan"), W), "NaN or infinity"),
             ((W, torch.eye(5, 2)), "same width d_k")]
    for got, fragment in cases:
        with pytest.raises(Failure, match=fragment.replace("`", "\\`")):
            query_key_weights(got, "f()", 5, "2 + 3")
