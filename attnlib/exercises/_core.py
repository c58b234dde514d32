"""The machinery behind every exercise check: run the learner's code, explain failures.

A lesson's exercises live in ``attnlib/exercises/lessonNN.py``. Each is an
:class:`Exercise` whose ``test`` function receives a :class:`Trial` and the learner's
function. The trial calls the learner's code safely and compares results; the first
problem found becomes a :class:`Failure` with a message written for the learner.

``Exercise.check`` turns a failure into a :class:`CheckFailed` (an ``AssertionError``,
so nbgrader and nbval both see it) whose message is shown once, and success into one
printed line. It never lets the learner's bug crash the checker itself. Checks run on
the CPU with a fixed seed, whatever device the lesson uses, so a grade never depends on
the grader's hardware.
"""

from __future__ import annotations

import math
import operator
import sys
import textwrap
import traceback
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


class Failure(Exception):
    """Something is wrong with the learner's answer; the message says what."""


class Trial:
    """Helpers a checker uses: seeded inputs, a safe call, and explained comparisons."""

    def __init__(self, exercise: "Exercise", seed: int = 0, device: torch.device | str = "cpu"):
        self.exercise = exercise
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    # ----- inputs -------------------------------------------------------------------
    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Seeded standard-normal tensor of ``shape`` on the trial's device."""
        return torch.randn(*shape, generator=self.generator, dtype=dtype).to(self.device)

    def randint(self, low: int, high: int, shape: Sequence[int]) -> torch.Tensor:
        """Seeded integers in ``[low, high)`` of ``shape`` on the trial's device."""
        return torch.randint(low, high, tuple(shape), generator=self.generator).to(self.device)

    def rand(self, *shape: int) -> torch.Tensor:
        """Seeded uniform [0, 1) tensor of ``shape`` on the trial's device."""
        return torch.rand(*shape, generator=self.generator).to(self.device)

    # ----- calling the learner's code ---------------------------------------------
    def call(self, fn: Callable, *args, what: str = "your function", **kwargs):
        """Call ``fn`` and turn anything it raises into a Failure that explains it.

        Arguments are cloned, so a learner's in-place edit cannot spoil the expected
        answer the checker computes from the same inputs.
        """
        args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        try:
            return fn(*args, **kwargs)
        except NotImplementedError as error:
            stub_of = str(error).split(":")[0]  # stubs say "Exercise 2.2 (masked softmax): ..."
            number = stub_of.split()[1] if stub_of.startswith("Exercise ") and len(stub_of.split()) > 1 else None
            if number is not None and number != self.exercise.number:
                raise Failure(
                    f"your function calls code that is not written yet: {stub_of}. "
                    "Solve that exercise first (or call attnlib's version instead)."
                ) from None
            raise Failure(
                "not attempted yet. Replace the `raise NotImplementedError(...)` line in the "
                "solution cell with your code, run that cell, then run this check again."
            ) from None
        except Exception as error:  # the learner's bug: show it, do not crash
            raise Failure(f"{what} raised an exception:\n{_describe_exception(error)}") from None

    # ----- comparisons --------------------------------------------------------------
    def expect_tensor(
        self,
        got,
        expected: torch.Tensor,
        what: str,
        *,
        atol: float = 1e-5,
        rtol: float = 1e-4,
        check_dtype: bool = True,
    ) -> torch.Tensor:
        """``got`` must be a tensor like ``expected``: type, shape, dtype, device, finite, values."""
        if got is None:
            raise Failure(f"{what} is None. Did your function forget to `return` its result?")
        if isinstance(got, np.ndarray):
            raise Failure(
                f"{what} is a numpy array; a torch.Tensor was expected "
                "(stay in torch, or convert with torch.from_numpy)."
            )
        if not isinstance(got, torch.Tensor):
            raise Failure(f"{what} is a {type(got).__name__}; a torch.Tensor was expected.")
        if tuple(got.shape) != tuple(expected.shape):
            raise Failure(
                f"{what} has shape {tuple(got.shape)}; expected shape {tuple(expected.shape)}."
            )
        if check_dtype and got.dtype != expected.dtype:
            raise Failure(f"{what} has dtype {got.dtype}; expected dtype {expected.dtype}.")
        if got.device != expected.device:
            raise Failure(
                f"{what} is on device {got.device}; expected {expected.device} "
                "(create new tensors on the inputs' device, e.g. device=x.device)."
            )
        self.expect_finite(got, what)
        diff = (got.detach().double() - expected.detach().double()).abs()  # same shape
        if diff.numel() and not torch.allclose(got.detach().double(), expected.detach().double(), atol=atol, rtol=rtol):
            worst = int(diff.argmax())
            index = tuple(int(i) for i in np.unravel_index(worst, tuple(diff.shape)))
            rel = diff / expected.detach().double().abs().clamp_min(1e-12)
            where = f"worst at index {index}; " if index else ""
            raise Failure(
                f"{what} has the right shape but wrong values: max absolute error "
                f"{diff.max().item():.3g}, max relative error {rel.max().item():.3g} "
                f"({where}tolerance atol={atol:g}, rtol={rtol:g})."
            )
        return got

    def expect_finite(self, got: torch.Tensor, what: str) -> None:
        """No NaN and no infinity anywhere in ``got``."""
        if not got.is_floating_point():
            return
        bad = ~torch.isfinite(got.detach())
        if bad.any():
            kind = "NaN" if torch.isnan(got.detach()).any() else "infinity"
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise Failure(
                f"{what} contains {kind} at {int(bad.sum())} position(s) (first at index {first})."
            )

    def expect_number(self, got, expected: float, what: str, *, atol: float = 1e-5, rtol: float = 1e-4) -> float:
        """``got`` must be a real number (Python, numpy or 0-d tensor) close to ``expected``."""
        if got is None:
            raise Failure(f"{what} is None. Did your function forget to `return` its result?")
        if isinstance(got, torch.Tensor):
            if got.numel() != 1:
                raise Failure(f"{what} is a tensor of shape {tuple(got.shape)}; a single number was expected.")
            got = got.item()
        if isinstance(got, np.ndarray) and got.size == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float, np.integer, np.floating)):
            raise Failure(f"{what} is a {type(got).__name__}; a number was expected.")
        got = float(got)
        if not math.isfinite(got):
            raise Failure(f"{what} is {got}; a finite number was expected.")
        if not math.isclose(got, expected, abs_tol=atol, rel_tol=rtol):
            raise Failure(
                f"{what} is {got:.6g}, which is off by {abs(got - expected):.3g} "
                f"(tolerance atol={atol:g}, rtol={rtol:g})."
            )
        return got

    def expect(self, condition: bool, message: str) -> None:
        """A property of the answer must hold; ``message`` says which one broke."""
        if not bool(condition):
            raise Failure(message)


def comparable(got, expected: torch.Tensor) -> bool:
    """True when ``got`` is a finite float tensor shaped and placed like ``expected``.

    With :func:`close`, this lets a checker recognise a *specific* mistake (the
    answer equals what a known wrong formula gives) before the generic comparison
    explains the error. Neither ever raises on a learner's odd result.
    """
    return (
        isinstance(got, torch.Tensor)
        and got.is_floating_point()
        and tuple(got.shape) == tuple(expected.shape)
        and got.device == expected.device
        and bool(torch.isfinite(got.detach()).all())
    )


def close(got: torch.Tensor, reference: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """``got`` matches ``reference`` (same shape assumed), compared in float64 on the CPU."""
    a = got.detach().double().cpu()
    b = reference.detach().double().cpu()
    return bool(torch.isfinite(b).all()) and torch.allclose(a, b, atol=atol, rtol=rtol)


def whole_number(got, what: str, expected: str = "a whole number (int)") -> int:
    """``got`` as an int, when a learner's count is one in any usual form (int, 6.0, a 0-d integer tensor).

    Anything else raises :class:`Failure` naming ``what`` and what was expected, so a checker that
    compares counts never crashes on a None, a bool or a string.
    """
    if got is None:
        raise Failure(f"{what} is None. Did your function forget to `return` the count?")
    if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_floating_point():
        got = got.item()
    if isinstance(got, float) and got.is_integer():
        return int(got)
    if isinstance(got, bool):
        raise Failure(f"{what} is {got}; {expected} was expected.")
    try:
        return operator.index(got)
    except TypeError:
        raise Failure(f"{what} is a {type(got).__name__} ({got!r}); {expected} was expected.") from None


def query_key_weights(got, what: str, d_model: int, rows: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A learner's hand-set ``(W_Q, W_K)``, checked and returned on the CPU: two (d_model, d_k) float32 tensors.

    ``rows`` says in the lesson's words what d_model is made of (e.g. ``"max_len + d_content"``).
    Anything else raises :class:`Failure` naming ``what`` and the first thing that is wrong, so the
    checkers of the exercises that set a head by hand (lessons 05 and 13) never crash on it.
    """
    if got is None:
        raise Failure(f"{what} returned None. Did your function forget to `return W_Q, W_K`?")
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        kind = type(got).__name__ + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else "")
        raise Failure(f"{what} returned a {kind}; expected a pair `(W_Q, W_K)`.")
    for name, W in zip(("W_Q", "W_K"), got):
        if not isinstance(W, torch.Tensor):
            raise Failure(f"{what}: {name} is a {type(W).__name__}; a torch.Tensor was expected.")
        if W.dim() != 2 or W.shape[0] != d_model:
            raise Failure(f"{what}: {name} has shape {tuple(W.shape)}; expected (d_model, d_k) with d_model = "
                          f"{rows} = {d_model}: one row per feature of the input.")
        if W.dtype != torch.float32:
            raise Failure(f"{what}: {name} has dtype {W.dtype}; expected torch.float32 (the default of "
                          "torch.zeros and torch.eye), the dtype of the inputs.")
        if not torch.isfinite(W).all():
            raise Failure(f"{what}: {name} contains NaN or infinity; use a large but finite scale.")
    if got[0].shape != got[1].shape:
        raise Failure(f"{what}: W_Q has shape {tuple(got[0].shape)} but W_K has {tuple(got[1].shape)}; queries "
                      "and keys must have the same width d_k to be compared by a dot product.")
    return got[0].detach().cpu(), got[1].detach().cpu()  # (d_model, d_k) each


class CheckFailed(AssertionError):
    """A check's verdict on a wrong answer: the explanation, shown once and nothing else.

    IPython shows ``_render_traceback_()`` in place of a traceback, so the learner (and an
    nbgrader feedback page) reads the message once, without the checker's own frames or
    the file paths of the machine that ran it. Elsewhere it is a plain AssertionError,
    which nbgrader and nbval both count as a failed cell.
    """

    def _render_traceback_(self) -> list[str]:
        return wrap(str(self)).splitlines()


@dataclass
class Exercise:
    """One exercise: its number, title, the test it must pass, and hints in order.

    ``uses`` maps the names of earlier exercises' functions that a learner's answer may
    call (e.g. ``{"my_masked_softmax": attnlib.masked_softmax}``) to correct versions.
    The check runs the learner's function with those names bound to the correct
    versions, so a mistake in an earlier exercise never costs this one its points.
    """

    number: str
    title: str
    test: Callable[[Trial, Callable], None]
    hints: list[str]
    success: str = "well done."
    seed: int = 0
    uses: dict[str, Callable] = field(default_factory=dict)
    _hints_given: int = field(default=0, repr=False)

    def check(self, fn) -> None:
        """Run the learner's ``fn`` through the test, on the CPU with a fixed seed.

        Success prints one line. Failure raises :class:`CheckFailed` (an AssertionError)
        whose message says what is wrong; the grade never depends on the machine.
        """
        __tracebackhide__ = True  # pytest and IPython: not the learner's frame
        name = f"Exercise {self.number} ({self.title})"
        stand_ins = []
        try:
            if not callable(fn):
                raise Failure(f"expected a function, got a {type(fn).__name__}.")
            _require_untouched(_PRISTINE, "before this check ran")
            before = _watched_state()
            fn, stand_ins = self._with_correct_helpers(fn)
            try:
                self.test(Trial(self, self.seed, "cpu"), fn)
            finally:
                _require_untouched(before, "while this check ran your code")
        except Failure as failure:
            message = f"✗ {name}: {failure}\nStuck? Run the hint cell below."
        except Exception as error:  # the learner's result broke the checker itself
            message = f"✗ {name}: your answer could not be checked; using it raised\n{_describe_exception(error)}"
        else:
            note = ""
            if stand_ins:
                note = (f" (Checked with correct versions of {', '.join(stand_ins)} standing in for yours, "
                        "so an earlier exercise cannot cost this one its points.)")
            print(wrap(f"✓ {name}: {self.success}{note}"))
            return
        raise CheckFailed(message) from None

    def hint(self) -> None:
        """Print the next hint; after the last one, repeat it."""
        index = min(self._hints_given, len(self.hints) - 1)
        last = index == len(self.hints) - 1
        self._hints_given += 1
        suffix = " (that is the last hint)" if last else " (run again for another)"
        print(f"Hint {index + 1}/{len(self.hints)} for Exercise {self.number}{suffix}:\n{wrap(self.hints[index])}")

    def _with_correct_helpers(self, fn) -> tuple[Callable, list[str]]:
        """``fn`` with the earlier exercises' functions it calls replaced by correct ones."""
        if not self.uses or not isinstance(fn, types.FunctionType):
            return fn, []
        called = _global_names(fn.__code__)
        swapped = {name: helper for name, helper in self.uses.items() if name in called}
        if not swapped:
            return fn, []
        namespace = {**fn.__globals__, **swapped}
        clone = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
        clone.__kwdefaults__ = fn.__kwdefaults__
        return clone, sorted(swapped)


# Built-ins that Jupyter kernels rebind by themselves, e.g. ipykernel's ``input`` for every cell.
_REBOUND_BY_KERNELS = {"input", "raw_input", "help", "exit", "quit", "display", "get_ipython"}
# What checkers compute and compare with. (Not all of torch: torch rewraps some of its own
# functions when parts of it load lazily, e.g. torch.manual_seed once the optimiser runs.)
_TORCH_FUNCTIONS = ("allclose", "equal", "isfinite", "isnan", "softmax", "where", "zeros_like", "ones_like", "full_like",
                    "randn", "rand", "randint", "tensor", "arange", "ones", "zeros", "stack", "cat", "broadcast_to")
_TENSOR_METHODS = ("detach", "double", "float", "cpu", "to", "clone", "abs", "all", "any", "max", "min", "sum", "mean",
                   "argmax", "item", "tolist", "numel", "nonzero", "clamp_min", "is_floating_point", "masked_fill",
                   "transpose", "reshape", "view", "__sub__", "__eq__", "__ne__", "__lt__", "__gt__", "__bool__",
                   "__float__", "__len__", "__getitem__", "__matmul__", "__mul__", "__truediv__", "shape", "dtype",
                   "device")


def _watched_state() -> dict:
    """What a check relies on, by identity: the checkers' own modules and classes, the torch
    functions and tensor methods they compute with, and Python's built-ins. Code that replaces
    any of them cannot pass a check."""
    import builtins

    import torch.nn.functional as F

    state = {}
    for name, value in vars(builtins).items():
        if callable(value) and name not in _REBOUND_BY_KERNELS and \
                (not name.startswith("_") or name in ("__import__", "__build_class__")):
            state[("builtins", name)] = value
    for name in _TORCH_FUNCTIONS:
        state[("torch", name)] = getattr(torch, name)
    for name in _TENSOR_METHODS:
        state[("torch.Tensor", name)] = getattr(torch.Tensor, name)
    state[("torch.testing", "assert_close")] = torch.testing.assert_close
    state[("torch.nn.functional", "scaled_dot_product_attention")] = F.scaled_dot_product_attention
    checkers = {name: module for name, module in sys.modules.items() if name.startswith("attnlib.exercises")}
    owners = {**checkers, "Trial": Trial, "Exercise": Exercise, "Failure": Failure, "CheckFailed": CheckFailed}
    for where, owner in owners.items():
        for name, value in vars(owner).items():
            if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
                state[(where, name)] = value
    return state


def _require_untouched(before: dict, when: str) -> None:
    """Fail when anything :func:`_watched_state` saw in ``before`` has since been replaced."""
    now = _watched_state()
    changed = sorted(f"{where}.{name}" for key in before for where, name in [key]
                     if key in now and now[key] is not before[key])
    if changed:
        raise Failure(f"something replaced {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''} "
                      f"{when}. A check relies on these, so it cannot pass like this; restart the kernel "
                      "(Kernel → Restart) and run the notebook again without that code.")


def _global_names(code: types.CodeType) -> set[str]:
    """Every global name a function's code (and the code nested in it) may look up."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


def wrap(text: str, width: int = 100) -> str:
    """Wrap the prose lines of ``text`` at ``width`` columns, between words.

    Lines that look like code (indented, or carrying a ``  #`` comment) stay as they are,
    so hints that end with a key line of code keep it intact.
    """
    lines = []
    for line in text.splitlines():
        if len(line) <= width or line.startswith((" ", "\t")) or "  # " in line:
            lines.append(line)
            continue
        lines.extend(textwrap.wrap(line, width, break_long_words=False,
                                   break_on_hyphens=False))
    return "\n".join(lines)


def _describe_exception(error: BaseException) -> str:
    """``Type: message``, plus the line of notebook code where it happened when known."""
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    frames = traceback.extract_tb(error.__traceback__)
    notebook_frames = [f for f in frames if "ipykernel" in f.filename or f.filename.startswith("<")]
    if notebook_frames:
        frame = notebook_frames[-1]
        code = (frame.line or "").strip()
        text += f"\n  at line {frame.lineno} of your cell" + (f": {code}" if code else "")
    return "  " + text.replace("\n", "\n  ")


_PRISTINE = _watched_state()  # as the checker module found them when it was first imported
