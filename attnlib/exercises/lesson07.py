"""Exercises of lesson 07 (positional encoding).

7.1 ``shift_matrix``: the matrix M_k with PE(p + k) = PE(p) M_k for the sinusoidal encoding, derived
    from the angle-addition formulas (the lesson only shows that such a matrix exists).
7.2 ``rope_rotate_half``: rotary positions for a (B, H, T, d) tensor in the layout of GPT-NeoX and
    Llama, where feature i is paired with feature i + d/2 (the lesson derives adjacent pairs).
7.3 ``alibi_slopes``: ALiBi's slopes for any number of heads, from the paper's rule (the lesson
    derives them for powers of two).

Each checker first looks for the classic mistakes (a transposed rotation, the wrong frequencies, the
other layout, the rotation turned the wrong way, positions from 1, repeated slopes) and names them.
"""

from __future__ import annotations

import math

import torch

from ._core import Exercise, Failure, Trial, close, comparable


def _frequencies(d: int, base: float = 10000.0, *, per_feature: bool = False) -> torch.Tensor:
    """θ_i = base^(-2i/d) for the d/2 pairs, float64; ``per_feature``: the mistake base^(-i/d)."""
    i = torch.arange(d // 2, dtype=torch.float64)  # (d/2,)
    return base ** (-(i if per_feature else 2 * i) / d)  # (d/2,)


def _require_tensor(got, what: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Type, shape and finiteness first, with messages for a learner; dtype is checked by the caller."""
    if got is None:
        raise Failure(f"{what} is None. Did your function forget to `return` its result?")
    if not isinstance(got, torch.Tensor):
        raise Failure(f"{what} is a {type(got).__name__}; a torch.Tensor was expected.")
    if tuple(got.shape) != shape:
        raise Failure(f"{what} has shape {tuple(got.shape)}; expected shape {shape}.")
    if not got.is_floating_point():
        raise Failure(f"{what} has dtype {got.dtype}; a floating-point tensor was expected.")
    if not bool(torch.isfinite(got.detach()).all()):
        raise Failure(f"{what} contains NaN or infinity.")
    return got


# The lesson's derivations (sinusoidal_encoding, rope, alibi_slopes_power_of_two) may be called by an answer;
# the grading clean room runs only the solution cells, so checks bind those names to attnlib's versions.
def _sinusoidal_encoding(max_len, d_model):
    from ..positions import sinusoidal_positional_encoding

    return sinusoidal_positional_encoding(max_len, d_model)


def _rope(x, offset=0, base=10000.0):
    from ..positions import apply_rope

    return apply_rope(x, offset=offset, base=base)


def _alibi_slopes_power_of_two(num_heads):
    return torch.tensor(_power_of_two_slopes(num_heads), dtype=torch.float32)


# ----- 7.1 the shift matrix of the sinusoidal encoding ------------------------------------------
def _shift(k: int, d: int, *, per_feature: bool = False, halves: bool = False) -> torch.Tensor:
    """M_k (d, d) float64 with PE[p + k] = PE[p] @ M_k; the flags build two classic mistakes."""
    angles = k * _frequencies(d, per_feature=per_feature)  # (d/2,)
    c, s = torch.diag(angles.cos()), torch.diag(angles.sin())  # (d/2, d/2) each
    M = torch.zeros(d, d, dtype=torch.float64)  # (d, d)
    sines, cosines = (slice(0, d // 2), slice(d // 2, d)) if halves else (slice(0, d, 2), slice(1, d, 2))
    M[sines, sines], M[sines, cosines] = c, -s  # sin(ω(p+k)) = sin(ωp)cos(ωk) + cos(ωp)sin(ωk) ...
    M[cosines, sines], M[cosines, cosines] = s, c  # cos(ω(p+k)) = cos(ωp)cos(ωk) - sin(ωp)sin(ωk)
    return M


def _test_shift_matrix(t: Trial, shift_matrix) -> None:
    from ..positions import sinusoidal_positional_encoding

    for k, d in ((1, 8), (3, 16), (0, 4), (-2, 8), (7, 2), (25, 12)):
        what = f"shift_matrix(k={k}, d_model={d})"
        got = _require_tensor(t.call(shift_matrix, k, d, what="shift_matrix"), what, (d, d))
        M = got.detach().double().cpu()  # (d, d)
        expected = _shift(k, d)
        if close(M, expected, atol=1e-4):
            continue
        mistakes = (
            (_shift(-k, d), "maps PE(p) to PE(p - k): it is the transpose of the matrix wanted (the rotation "
             "the other way). With row vectors, PE(p + k) = PE(p) @ M, so column j of M holds the coefficients "
             "of the new feature j"),
            (_shift(k, d, per_feature=True), "uses the wrong frequencies: pair i (features 2i and 2i + 1) "
             "turns at ω_i = 1 / 10000^(2i / d_model), not 1 / 10000^(i / d_model)"),
            (_shift(k, d, halves=True), "treats the features as [all sines | all cosines]; the encoding "
             "interleaves them: feature 2i is a sine, feature 2i + 1 the cosine of the same angle"),
            (_shift(1, d), "is the matrix for k = 1: the angle of each rotation is k·ω_i"),
            (torch.eye(d, dtype=torch.float64), "is the identity: it leaves every position where it is"),
        )
        for wrong, message in mistakes:
            if close(M, wrong, atol=1e-4) and not close(wrong, expected, atol=1e-4):
                raise Failure(f"{what} {message}.")
        pe = sinusoidal_positional_encoding(300, d).double()  # (300, d)
        start, end = (pe[:300 - k], pe[k:]) if k >= 0 else (pe[-k:], pe[:300 + k])  # PE(p) and PE(p + k)
        error = (start @ M - end).abs()  # (positions, d)
        p = int(error.max(dim=1).values.argmax()) + max(0, -k)
        raise Failure(f"{what} does not map PE(p) to PE(p + k): PE({p}) @ M differs from PE({p + k}) by up to "
                      f"{error.max().item():.3g}. Write sin(ω(p + k)) and cos(ω(p + k)) with the angle-addition "
                      "formulas: each is a fixed mixture of sin(ωp) and cos(ωp).")


shift_matrix = Exercise(
    number="7.1",
    title="the shift matrix",
    test=_test_shift_matrix,
    hints=[
        "Take one pair of features, (sin ωp, cos ωp) with ω = 1/10000^(2i/d_model). The angle-addition formulas "
        "give sin(ω(p + k)) = sin ωp · cos ωk + cos ωp · sin ωk, and cos(ω(p + k)) = cos ωp · cos ωk − sin ωp · "
        "sin ωk: a 2 × 2 matrix that depends on k and ω, not on p.",
        "With row vectors, [s', c'] = [s, c] @ B: column 0 of B holds the coefficients of s' (cos ωk, sin ωk), "
        "column 1 those of c' (−sin ωk, cos ωk). M_k is block-diagonal: block i sits on rows and columns 2i, "
        "2i + 1, one per frequency.",
        "M[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, -s], [s, c]])  # c, s = cos(k·ω_i), sin(k·ω_i)",
    ],
    success="one matrix moves every position k steps on: PE(p + k) = PE(p) M_k, for every p and k.",
    uses={"sinusoidal_encoding": _sinusoidal_encoding},
)


# ----- 7.2 RoPE in the rotate-half layout --------------------------------------------------------
def _rotate_half(x: torch.Tensor, base: float = 10000.0, *, sign: float = 1.0, start: int = 0,
                 per_feature: bool = False) -> torch.Tensor:
    """Feature i pairs with i + d/2, rotated by sign · (start + p) · θ_i; computed in float64."""
    length, d = x.shape[-2], x.shape[-1]
    positions = torch.arange(start, start + length, dtype=torch.float64)  # (T,)
    angles = sign * positions[:, None] * _frequencies(d, base, per_feature=per_feature)  # (T, d/2)
    cos, sin = angles.cos(), angles.sin()  # (T, d/2) each
    a, b = x.double()[..., : d // 2], x.double()[..., d // 2 :]  # (..., T, d/2) each
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1).to(x.dtype)  # (..., T, d)


def _test_rope_rotate_half(t: Trial, rope_rotate_half) -> None:
    from ..positions import apply_rope

    for shape, base, dtype in (((2, 3, 5, 8), 10000.0, torch.float32), ((1, 2, 7, 4), 100.0, torch.float32),
                               ((2, 1, 6, 12), 10000.0, torch.float64)):
        B, H, T, d = shape
        x = t.randn(*shape, dtype=dtype)  # (B, H, T, d)
        what = f"rope_rotate_half(x, base={base:g}) for x of shape (B, H, T, d) = {shape}, {dtype}"
        got = _require_tensor(t.call(rope_rotate_half, x, base, what="rope_rotate_half"), what, shape)
        if got.dtype != dtype:
            raise Failure(f"{what} has dtype {got.dtype}; it must keep the input's dtype, {dtype}.")
        expected = _rotate_half(x, base)  # (B, H, T, d)
        if close(got, expected, atol=1e-5):
            continue
        if comparable(got, expected):
            mistakes = (
                (apply_rope(x, base=base), "pairs adjacent features (2i, 2i + 1): that is attnlib's layout. Here "
                 "feature i is paired with feature i + d/2 (the first half with the second half)"),
                (_rotate_half(x, base, sign=-1.0), "turns each pair the wrong way (by −p·θ_i): the new first "
                 "feature is a·cos φ − b·sin φ and the new second a·sin φ + b·cos φ"),
                (_rotate_half(x, base, start=1), "numbers the positions from 1; the first token is at position 0 "
                 "and is not turned at all"),
                (_rotate_half(x, base, per_feature=True), "uses the wrong frequencies: pair i turns at "
                 "θ_i = base^(−2i/d), not base^(−i/d)"),
                (_rotate_half(x.transpose(1, 2), base).transpose(1, 2), "takes the positions along the heads axis "
                 "(dimension 1); positions run along dimension −2, the T of (B, H, T, d)"),
            )
            for wrong, message in mistakes:
                if close(got, wrong, atol=1e-5):
                    raise Failure(f"{what} {message}.")
            lengths = got.detach().double().norm(dim=-1)  # (B, H, T)
            if not close(lengths, x.double().norm(dim=-1), atol=1e-4):
                raise Failure(f"{what} changes the lengths of the vectors (by up to "
                              f"{(lengths - x.double().norm(dim=-1)).abs().max().item():.3g}); a rotation keeps "
                              "the length of every pair (a, b), so the new pair must be (a·cos φ − b·sin φ, "
                              "a·sin φ + b·cos φ) with one angle φ for both.")
        t.expect_tensor(got, expected, what, atol=1e-5, rtol=1e-4)


rope_rotate_half = Exercise(
    number="7.2",
    title="RoPE, rotate-half layout",
    test=_test_rope_rotate_half,
    hints=[
        "Split the features in two halves: a = x[..., :d/2] and b = x[..., d/2:], each (B, H, T, d/2). Pair i "
        "is (a_i, b_i), and the whole rotation is elementwise on the two halves at once.",
        "The angles form a (T, d/2) table: position p = 0 .. T−1 (dimension −2 of x) times θ_i = base^(−2i/d). "
        "It broadcasts against (B, H, T, d/2); put the two rotated halves back side by side with torch.cat.",
        "rotated = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)  # cos, sin: (T, d/2) tables",
    ],
    success="rotary positions in the rotate-half layout: the same rotations as attnlib's, on other pairs.",
    uses={"rope": _rope},
)


# ----- 7.3 ALiBi's slopes for any number of heads ------------------------------------------------
def _power_of_two_slopes(n: int, *, first_h: int = 1) -> list[float]:
    return [2.0 ** (-8.0 * h / n) for h in range(first_h, first_h + n)]


def _paper_slopes(n: int, *, extras: slice = slice(0, None, 2)) -> list[float]:
    below = 2 ** int(math.floor(math.log2(n)))
    return _power_of_two_slopes(below) + _power_of_two_slopes(2 * below)[extras][: n - below]


def _test_alibi_slopes(t: Trial, alibi_slopes) -> None:
    for n in (*range(1, 18), 24, 32, 48):
        what = f"alibi_slopes({n})"
        got = _require_tensor(t.call(alibi_slopes, n, what="alibi_slopes"), what, (n,))
        if got.dtype != torch.float32:
            raise Failure(f"{what} has dtype {got.dtype}; expected torch.float32 (torch.tensor of Python floats "
                          "gives it).")
        expected = torch.tensor(_paper_slopes(n), dtype=torch.float64)  # (n,)
        values = got.detach().double().cpu()  # (n,)
        if close(values, expected, atol=1e-7, rtol=1e-5):
            continue
        mistakes = (
            (_power_of_two_slopes(n, first_h=0), "starts at slope 2^0 = 1 (h = 0); h runs from 1 to n, so the "
             f"first slope is 2^(−8/{n})"),
            (_power_of_two_slopes(n), f"uses 2^(−8h/n) with n = {n}, which is not a power of two. The rule for "
             "such n: the slopes of the largest power of two below n, then every other slope of twice that power"),
            (_paper_slopes(n, extras=slice(1, None, 2)), "repeats slopes: every other slope of 2n' starting from "
             "the second are exactly the n' slopes you already have. Take the first, third, fifth, ..."),
            (_power_of_two_slopes(2 ** math.ceil(math.log2(n)))[:n], "takes the first n slopes of the next power "
             "of two above n; the rule starts from the largest power of two below n"),
        )
        for wrong, message in mistakes:
            wrong = torch.tensor(wrong, dtype=torch.float64)
            if close(values, wrong, atol=1e-7, rtol=1e-5) and not close(wrong, expected, atol=1e-7, rtol=1e-5):
                raise Failure(f"{what} {message}.")
        if close(values.sort().values, expected.sort().values, atol=1e-7, rtol=1e-5):
            raise Failure(f"{what} has the right slopes in another order; the contract lists the n' slopes of the "
                          "power of two first (largest first), then the extra ones in the order they come.")
        worst = int((values - expected).abs().argmax())
        raise Failure(f"{what} is off: head {worst} gets slope {values[worst].item():.6g}, the rule gives "
                      f"{expected[worst].item():.6g}.")


alibi_slopes = Exercise(
    number="7.3",
    title="ALiBi's slopes for any number of heads",
    test=_test_alibi_slopes,
    hints=[
        "For a power of two n you already have the slopes: 2^(−8h/n) for h = 1 .. n. For any other n, find n', "
        "the largest power of two not above n (6 → 4, 12 → 8): 2 ** math.floor(math.log2(n)).",
        "The 2n' slopes of twice that power interleave with the n' slopes: every second one of them (the 1st, "
        "3rd, 5th, ...) lies between two of yours. Add those, in order, until you have n.",
        "slopes = power_of_two(below) + power_of_two(2 * below)[0::2][: num_heads - below]",
    ],
    success="ALiBi's slopes for any number of heads, the paper's rule (and attnlib's).",
    uses={"alibi_slopes_power_of_two": _alibi_slopes_power_of_two},
)
