"""Exercise checkers, one module per lesson: ``from attnlib.exercises import lesson02``.

Each module holds :class:`Exercise` objects; a notebook's check cell calls
``lesson02.scale.check(attention_scale)`` and its hint cell ``lesson02.scale.hint()``.
"""

from ._core import CheckFailed, Exercise, Failure, Trial

__all__ = ["CheckFailed", "Exercise", "Failure", "Trial"]
