"""Exercises of lesson 00 (welcome and setup): warm-ups in batched tensor code."""

from __future__ import annotations

import torch

from ._core import Exercise, Trial


def _test_vector_length(t: Trial, vector_length) -> None:
    x = t.randn(5)  # (d,)
    got = t.call(vector_length, x)
    t.expect_tensor(got, torch.linalg.vector_norm(x, dim=-1), "vector_length(x) for x of shape (5,)")

    batch = t.randn(2, 3, 4)  # (2, 3, d)
    got = t.call(vector_length, batch)
    t.expect_tensor(
        got,
        torch.linalg.vector_norm(batch, dim=-1),
        "vector_length(x) for x of shape (2, 3, 4) (one length per vector along the last dimension)",
    )

    pythagoras = torch.tensor([3.0, 4.0], device=t.device)  # (2,)
    got = t.call(vector_length, pythagoras)
    t.expect_tensor(got, torch.tensor(5.0, device=t.device), "vector_length of [3, 4]")


vector_length = Exercise(
    number="0.1",
    title="vector length",
    test=_test_vector_length,
    hints=[
        "The length of a vector is the square root of the sum of its squared entries. By hand for "
        "x = [3, 4]: squares [9, 16], their sum 25, its square root 5.",
        "The same three steps in torch: `x ** 2` squares every entry (same shape); `.sum(dim=-1)` adds "
        "along the last dimension, one number per vector (a plain `.sum()` would add everything into one "
        "number); `torch.sqrt(...)` takes the root.",
    ],
    success="one length per vector, for any batch shape.",
)


def _test_unit_vectors(t: Trial, unit_vectors) -> None:
    x = t.randn(4, 6)  # (4, d)
    expected = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # (4, d)
    got = t.call(unit_vectors, x)
    t.expect_tensor(got, expected, "unit_vectors(x) for x of shape (4, 6)")
    lengths = torch.linalg.vector_norm(got, dim=-1)  # (4,)
    t.expect(
        torch.allclose(lengths, torch.ones_like(lengths), atol=1e-5),
        f"every output vector must have length 1; got lengths {lengths.tolist()}",
    )

    with_zero = t.randn(3, 2)  # (3, d)
    with_zero[1] = 0.0  # a zero vector has no direction
    expected = with_zero / torch.linalg.vector_norm(with_zero, dim=-1, keepdim=True).clamp_min(1e-12)  # (3, d)
    got = t.call(unit_vectors, with_zero)
    if isinstance(got, torch.Tensor) and got.is_floating_point() and torch.isnan(got).any():
        t.expect(False, "unit_vectors(x) returns NaN when x holds a zero vector (0 / 0); "
                 "a zero vector should stay zero.")
    t.expect_tensor(got, expected, "unit_vectors(x) for x of shape (3, 2) whose row 1 is zero")


unit_vectors = Exercise(
    number="0.2",
    title="unit vectors",
    test=_test_unit_vectors,
    hints=[
        "Divide every vector by its own length. Keep the summed dimension when you compute the lengths, "
        "`.sum(dim=-1, keepdim=True)`, so that (4, 6) / (4, 1) broadcasts.",
        "A zero vector has length 0, and 0 / 0 is NaN. Divide by "
        "`length.clamp_min(1e-12)` instead, so a zero vector stays zero.",
        "With `length` of shape (..., 1) from the first hint, the key line is\n"
        "return x / length.clamp_min(1e-12)  # (..., d) / (..., 1): each vector by its own length",
    ],
    success="unit length everywhere, and the zero vector stays zero (no NaN).",
)
