"""Exercises of lesson 02 (softmax and scaled dot-product attention).

Each checker first looks for the classic mistakes of this lesson (softmax over the
wrong dimension, no max subtraction, a mask read the wrong way round, a forgotten
1/√d_k, ...) and names them; only then does it fall back to a plain comparison with
PyTorch's own answer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._core import Exercise, Failure, Trial, close, comparable


# ----- small helpers (never raise on a learner's odd result) ----------------------------
def _has_nan(got) -> bool:
    return isinstance(got, torch.Tensor) and got.is_floating_point() and bool(torch.isnan(got.detach()).any())


_KEEPDIM_TIP = (
    "must match the size of tensor",
    "a reduction such as x.amax(dim=-1) or x.sum(dim=-1) drops that dimension; keep it with "
    "keepdim=True so that (..., n) and (..., 1) broadcast row by row.",
)
_TRANSPOSE_TIP = (
    "must match the size of tensor",
    "with batch or head dimensions in front, `k.T` reverses *all* the dimensions; transpose only the last "
    "two with `k.transpose(-2, -1)`. Reductions need keepdim=True to broadcast.",
)
_NONE_MASK_TIP = (
    "'NoneType'",
    "when mask is None there is nothing to hide: skip the masking step (`if mask is not None: ...`).",
)

_SOFTMAX_TIPS = (_KEEPDIM_TIP,)
_MASKED_SOFTMAX_TIPS = (_KEEPDIM_TIP, _NONE_MASK_TIP)
_ATTENTION_TIPS = (_TRANSPOSE_TIP, _NONE_MASK_TIP)


def _call(t: Trial, fn, *args, what: str, tips=()):
    """``t.call``, adding a tip when the learner's exception is a classic of this lesson."""
    try:
        return t.call(fn, *args, what=what)
    except Failure as failure:
        text = str(failure)
        for clue, tip in tips:
            if clue in text:
                raise Failure(f"{text}\n  Tip: {tip}") from None
        raise


def _reference_masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim where ``mask`` is True; rows with nothing allowed → zeros."""
    filled = scores.masked_fill(~mask, float("-inf"))  # (..., Lk)
    weights = torch.softmax(filled, dim=-1)  # (..., Lk), NaN on all-masked rows
    return torch.nan_to_num(weights, nan=0.0)  # (..., Lk)


def _reference_masked_softmax_or_plain(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """A correct exercise 2.2, standing in for the learner's when exercise 2.3 calls it."""
    return torch.softmax(scores, dim=-1) if mask is None else _reference_masked_softmax(scores, mask)


# ----- Exercise 2.1: a numerically stable softmax ---------------------------------------
def _test_softmax(t: Trial, softmax) -> None:
    x = t.randn(4, 7)  # (4, 7)
    got = _call(t, softmax, x, what="my_softmax(x)", tips=_SOFTMAX_TIPS)
    expected = torch.softmax(x, dim=-1)  # (4, 7)
    what = "my_softmax(x) for x of shape (4, 7)"
    if comparable(got, expected) and not close(got, expected):
        if close(got, torch.softmax(x, dim=0)):
            t.expect(False, f"{what} normalises down the columns (dim=0). Softmax works along the last "
                     "dimension: each row of scores becomes one row of weights. Use dim=-1 in max and sum.")
        if close(got, torch.exp(x)) or close(got, torch.exp(x - x.amax(dim=-1, keepdim=True))):
            t.expect(False, f"{what} returns exponentials that are not normalised: divide each row by "
                     "its sum (`.sum(dim=-1, keepdim=True)`) so that it adds up to one.")
        if close(got, torch.softmax(x.flatten(), dim=0).reshape(x.shape)):
            t.expect(False, f"{what} normalises over the whole tensor, so only the grand total is one. "
                     "Sum along the last dimension only, with keepdim=True.")
        sums = got.detach().sum(dim=-1)  # (4,)
        t.expect(torch.allclose(sums, torch.ones_like(sums), atol=1e-4),
                 f"{what}: each row must sum to one, but the row sums are "
                 f"{[round(s, 4) for s in sums.tolist()]}.")
    t.expect_tensor(got, expected, what)

    batch = t.randn(2, 3, 5)  # (2, 3, 5)
    got = _call(t, softmax, batch, what="my_softmax(x)", tips=_SOFTMAX_TIPS)
    t.expect_tensor(got, torch.softmax(batch, dim=-1), "my_softmax(x) for x of shape (2, 3, 5)")

    for row, size in (([1000.0, 999.0, 998.0], "large"), ([-1000.0, -1001.0, -1002.0], "very negative")):
        x = torch.tensor([row], device=t.device)  # (1, 3)
        got = _call(t, softmax, x, what="my_softmax(x)", tips=_SOFTMAX_TIPS)
        if isinstance(got, torch.Tensor) and got.is_floating_point() and not torch.isfinite(got.detach()).all():
            kind = "overflows: exp(1000) is inf in float32 (anything above about 88.7 is), and inf/inf is NaN" \
                if size == "large" else \
                "underflows: exp(-1000) is 0, so every entry becomes 0/0 = NaN"
            t.expect(False, f"my_softmax({row}) is not finite. With {size} scores the exponential {kind}. "
                     "Subtract the row's maximum before exp: softmax(x) = softmax(x - c) for any constant c, "
                     "and after the shift the largest exponent is exp(0) = 1.")
        t.expect_tensor(got, torch.softmax(x, dim=-1), f"my_softmax(x) for x = [{row}]")

    mixed = torch.tensor([[1000.0, 999.0, 998.0], [0.0, 1.0, 2.0]], device=t.device)  # (2, 3)
    got = _call(t, softmax, mixed, what="my_softmax(x)", tips=_SOFTMAX_TIPS)
    if _has_nan(got) and bool(torch.isfinite(got.detach()[0]).all()):
        t.expect(False, "my_softmax([[1000, 999, 998], [0, 1, 2]]) gives NaN in the second row: you subtract "
                 "the maximum of the whole tensor (1000), so the second row underflows to 0/0. Subtract each "
                 "row's own maximum: x.amax(dim=-1, keepdim=True).")
    t.expect_tensor(got, torch.softmax(mixed, dim=-1), "my_softmax(x) for x = [[1000, 999, 998], [0, 1, 2]]")

    double = t.randn(3, 4, dtype=torch.float64)  # (3, 4)
    got = _call(t, softmax, double, what="my_softmax(x)", tips=_SOFTMAX_TIPS)
    t.expect_tensor(got, torch.softmax(double, dim=-1), "my_softmax(x) for a float64 x of shape (3, 4)",
                    atol=1e-10, rtol=1e-8)


softmax = Exercise(
    number="2.1",
    title="a numerically stable softmax",
    test=_test_softmax,
    hints=[
        "softmax(x)_i = exp(x_i) / Σ_j exp(x_j), along the last dimension. Work with dim=-1 and keepdim=True "
        "so that a (..., n) tensor divided by a (..., 1) tensor broadcasts row by row.",
        "Adding the same number to every score of a row does not change the softmax. Subtract the row's "
        "maximum first: `x - x.amax(dim=-1, keepdim=True)`. Then every exponent is ≤ 0, so exp never "
        "overflows, and the largest one is exp(0) = 1, so the sum is never 0.",
        "shifted = x - x.amax(dim=-1, keepdim=True)  # (..., n)\n"
        "exp = torch.exp(shifted)  # (..., n)\n"
        "return exp / exp.sum(dim=-1, keepdim=True)  # (..., n)",
    ],
    success="stable for scores of any size, along the last dimension, for any batch shape.",
)


# ----- Exercise 2.2: softmax with a mask ------------------------------------------------
def _test_masked_softmax(t: Trial, masked_softmax) -> None:
    scores = t.randn(2, 3, 5)  # (2, 3, 5)
    mask = t.rand(2, 3, 5) > 0.4  # (2, 3, 5)
    mask[..., 0] = True  # every row may attend somewhere...
    mask[..., 1] = False  # ...and hides something (so an inverted mask is recognisable)
    what = "my_masked_softmax(scores, mask) for scores and mask of shape (2, 3, 5)"
    got = _call(t, masked_softmax, scores, mask, what="my_masked_softmax(scores, mask)", tips=_MASKED_SOFTMAX_TIPS)
    expected = _reference_masked_softmax(scores, mask)  # (2, 3, 5)
    if comparable(got, expected) and not close(got, expected):
        if close(got, _reference_masked_softmax(scores, ~mask)):
            t.expect(False, f"{what} keeps the positions where the mask is False. In this course (and in "
                     "torch's scaled_dot_product_attention) True means 'may attend': hide where mask is False, "
                     "e.g. scores.masked_fill(~mask, float('-inf')).")
        if close(got, torch.softmax(scores.masked_fill(~mask, 0.0), dim=-1)):
            t.expect(False, f"{what} sets masked scores to 0, but exp(0) = 1, so masked positions still get "
                     "weight. Set them to -inf instead: exp(-inf) = 0.")
        if close(got, torch.softmax(scores, dim=-1) * mask):
            t.expect(False, f"{what} zeroes the masked weights after the softmax, so the rows no longer sum "
                     "to one. Hide the scores before the softmax (fill them with -inf), so the remaining "
                     "weights share all the probability.")
        leaked = got.detach().masked_select(~mask).abs()  # (number of masked entries,)
        t.expect(not leaked.numel() or float(leaked.max()) == 0.0,
                 f"{what} gives masked positions a weight of up to {float(leaked.max()):.3g}; it must be exactly 0.")
    t.expect_tensor(got, expected, what)

    padding = torch.tensor([[True, True, True, False, False]], device=t.device)  # (1, 5)
    padding = padding[:, None, :]  # (1, 1, 5): one row per batch element, shared by every query
    got = _call(t, masked_softmax, scores, padding, what="my_masked_softmax(scores, mask)", tips=_MASKED_SOFTMAX_TIPS)
    t.expect_tensor(got, _reference_masked_softmax(scores, padding),
                    "my_masked_softmax(scores, mask) for scores (2, 3, 5) and a padding mask (1, 1, 5) "
                    "that must broadcast")

    huge = scores.clone()  # (2, 3, 5)
    huge[..., 3:] = 1e4  # the masked positions hold the largest scores by far
    got = _call(t, masked_softmax, huge, padding, what="my_masked_softmax(scores, mask)", tips=_MASKED_SOFTMAX_TIPS)
    expected = _reference_masked_softmax(huge, padding)  # (2, 3, 5)
    if _has_nan(got) or (comparable(got, expected) and float(got.detach().sum()) < 0.5):
        t.expect(False, "my_masked_softmax fails when the masked positions hold the largest scores (here 1e4): "
                 "the allowed weights vanish. Take the maximum after masking, i.e. fill with -inf first, "
                 "then subtract the maximum of what is left.")
    t.expect_tensor(got, expected, "my_masked_softmax(scores, mask) when masked positions hold scores of 1e4")

    empty_row = mask.clone()  # (2, 3, 5)
    empty_row[1, 2] = False  # query 2 of batch 1 may attend to nothing
    got = _call(t, masked_softmax, scores, empty_row, what="my_masked_softmax(scores, mask)", tips=_MASKED_SOFTMAX_TIPS)
    if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(scores.shape):
        row = got.detach()[1, 2]  # (5,)
        t.expect(not bool(torch.isnan(row).any()),
                 "a row whose mask is all False gives NaN: exp(-inf) is 0 everywhere, so the softmax is 0/0. "
                 "Return zeros for such a row (e.g. divide by the sum clamped to a tiny positive number, "
                 "or replace the NaN with torch.nan_to_num).")
        t.expect(not torch.allclose(row, torch.full_like(row, 1 / row.numel()), atol=1e-3),
                 "a row whose mask is all False gets uniform weights (1/5 each): filling with a large "
                 "negative number such as -1e9 instead of -inf makes such a row uniform. A query that may "
                 "attend to nothing must get all-zero weights.")
    t.expect_tensor(got, _reference_masked_softmax(scores, empty_row),
                    "my_masked_softmax(scores, mask) when one row of the mask is all False")

    got = _call(t, masked_softmax, scores, None, what="my_masked_softmax(scores, None)", tips=_MASKED_SOFTMAX_TIPS)
    t.expect_tensor(got, torch.softmax(scores, dim=-1),
                    "my_masked_softmax(scores, None) (no mask: a plain softmax)")


masked_softmax = Exercise(
    number="2.2",
    title="softmax with a mask",
    test=_test_masked_softmax,
    hints=[
        "True means 'may attend'. Give the hidden positions a score of -inf (`scores.masked_fill(~mask, "
        "float('-inf'))`): exp(-inf) = 0, so they get weight 0 and the others still sum to one. Do nothing "
        "when mask is None.",
        "Then the stable softmax of exercise 2.1: subtract the row maximum, exp, divide by the row sum. "
        "Two traps: take the maximum after masking; and a row that is all -inf has maximum -inf, so "
        "`x - max` is NaN. Replace a non-finite maximum by 0 (torch.where(torch.isfinite(m), m, 0)), "
        "and divide by `sum.clamp_min(1e-30)` so an empty row gives 0/tiny = 0.",
        "if mask is not None:\n"
        "    scores = scores.masked_fill(~mask, float('-inf'))  # (..., Lk)\n"
        "row_max = scores.amax(dim=-1, keepdim=True)  # (..., 1)\n"
        "row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))  # (..., 1)\n"
        "exp = torch.exp(scores - row_max)  # (..., Lk)\n"
        "return exp / exp.sum(dim=-1, keepdim=True).clamp_min(1e-30)  # (..., Lk)",
    ],
    success="masked positions get exactly 0, rows sum to one, and an empty row is zeros, not NaN.",
)


# ----- Exercise 2.3: scaled dot-product attention ---------------------------------------
def _attention_variant(q, k, v, mask=None, scale=None, dim=-1):
    """Attention with a chosen scale and softmax dimension, to recognise common mistakes."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # (..., Lq, Lk)
    weights = torch.nan_to_num(torch.softmax(scores, dim=dim), nan=0.0)  # (..., Lq, Lk)
    return weights @ v  # (..., Lq, d_v)


def _test_attention(t: Trial, attention) -> None:
    q = t.randn(2, 3, 4, 8)  # (B, H, Lq, d_k)
    k = t.randn(2, 3, 6, 8)  # (B, H, Lk, d_k)
    v = t.randn(2, 3, 6, 5)  # (B, H, Lk, d_v)
    what = "my_attention(q, k, v) for q (2, 3, 4, 8), k (2, 3, 6, 8), v (2, 3, 6, 5)"
    got = _call(t, attention, q, k, v, what="my_attention(q, k, v)", tips=_ATTENTION_TIPS)
    if isinstance(got, tuple):
        t.expect(False, f"{what} returned a tuple of {len(got)} items; return only the output tensor "
                 "(B, H, Lq, d_v), not the weights.")
    expected = F.scaled_dot_product_attention(q, k, v)  # (2, 3, 4, 5)
    if comparable(got, expected) and not close(got, expected, atol=1e-4):
        mistakes = (
            (1.0, "forgot the scale: the scores must be divided by √d_k (here √8) before the softmax, "
                  "otherwise their variance grows with d_k and the softmax saturates"),
            (1.0 / 8, "divides the scores by d_k = 8; divide by its square root √d_k instead"),
            (math.sqrt(8), "multiplies the scores by √d_k; divide by it instead"),
            (1.0 / math.sqrt(5), "scales by 1/√d_v (5 = the values' size); the scale uses the size of "
                                 "the queries and keys, d_k = q.shape[-1] = 8"),
        )
        for scale, message in mistakes:
            if close(got, _attention_variant(q, k, v, scale=scale), atol=1e-4):
                t.expect(False, f"{what} {message}.")
        if close(got, _attention_variant(q, k, v, dim=-2), atol=1e-4):
            t.expect(False, f"{what} takes the softmax over the queries (dim=-2). Each query's weights over "
                     "the keys must sum to one: softmax over the last dimension (dim=-1).")
    t.expect_tensor(got, expected, what, atol=1e-4)

    padding = torch.tensor([[True] * 5 + [False], [True] * 4 + [False] * 2], device=t.device)  # (B, Lk)
    padding = padding[:, None, None, :]  # (B, 1, 1, Lk): broadcast over heads and queries
    what = "my_attention(q, k, v, mask) with a padding mask of shape (2, 1, 1, 6)"
    got = _call(t, attention, q, k, v, padding, what="my_attention(q, k, v, mask)", tips=_ATTENTION_TIPS)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=padding)  # (2, 3, 4, 5)
    if comparable(got, expected) and not close(got, expected, atol=1e-4):
        if close(got, _attention_variant(q, k, v), atol=1e-4):
            t.expect(False, f"{what} ignores the mask: pass it on to the softmax (masked positions get -inf).")
        if close(got, _attention_variant(q, k, v, mask=~padding), atol=1e-4):
            t.expect(False, f"{what} attends to the positions where the mask is False. True means "
                     "'may attend': hide the positions where the mask is False.")
    t.expect_tensor(got, expected, what, atol=1e-4)

    x = t.randn(1, 6, 8)  # (B, L, d): self-attention, queries = keys
    values = t.randn(1, 6, 3)  # (B, L, d_v)
    causal = torch.ones(6, 6, dtype=torch.bool, device=t.device).tril()  # (L, L)
    what = "my_attention(x, x, v, causal_mask) with x (1, 6, 8) and a causal mask (6, 6)"
    got = _call(t, attention, x, x, values, causal, what="my_attention(q, k, v, mask)", tips=_ATTENTION_TIPS)
    expected = F.scaled_dot_product_attention(x, x, values, is_causal=True)  # (1, 6, 3)
    if comparable(got, expected):
        changed = values.clone()  # (1, 6, 3)
        changed[:, 4:] += 10.0  # only the values at positions 4 and 5 change
        again = _call(t, attention, x, x, changed, causal, what="my_attention(q, k, v, mask)", tips=_ATTENTION_TIPS)
        if comparable(again, expected):
            shift = (again.detach() - got.detach())[:, :4].abs().max().item()
            t.expect(shift < 1e-4,
                     f"{what}: changing only the values at positions 4 and 5 changed the outputs at positions "
                     f"0–3 (by up to {shift:.3g}). With a causal mask a position must not see its future: "
                     "check that the mask is applied, and that True means 'may attend'.")
    t.expect_tensor(got, expected, what, atol=1e-4)

    nothing = causal.clone()  # (L, L)
    nothing[2] = False  # query 2 may attend to nothing
    got = _call(t, attention, x, x, values, nothing, what="my_attention(q, k, v, mask)", tips=_ATTENTION_TIPS)
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (1, 6, 3):
        t.expect(not _has_nan(got),
                 "a query whose mask row is all False gets NaN. It must get a zero output: reuse your "
                 "masked softmax from exercise 2.2 (or attnlib.masked_softmax), which gives such a row "
                 "zero weights.")
    expected = _attention_variant(x, x, values, mask=nothing)  # (1, 6, 3)
    t.expect_tensor(got, expected, "my_attention(x, x, v, mask) when query 2 may attend to nothing", atol=1e-4)


attention = Exercise(
    number="2.3",
    title="scaled dot-product attention",
    test=_test_attention,
    hints=[
        "Three steps: scores = Q Kᵀ / √d_k with shape (..., Lq, Lk); weights = masked softmax of the "
        "scores over the keys (the last dimension); output = weights @ V with shape (..., Lq, d_v).",
        "Transpose only the last two dimensions of the keys, `k.transpose(-2, -1)`, so that any batch "
        "or head dimensions in front stay where they are. d_k is `q.shape[-1]`, and the scale is "
        "`1 / math.sqrt(d_k)`. For the mask, reuse your masked softmax from exercise 2.2.",
        "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Lq, Lk)\n"
        "weights = my_masked_softmax(scores, mask)  # (..., Lq, Lk)\n"
        "return weights @ v  # (..., Lq, d_v)",
    ],
    success="equal to torch's scaled_dot_product_attention, with and without masks; the future stays hidden.",
    uses={"my_masked_softmax": _reference_masked_softmax_or_plain},
)


# ----- Exercise 2.4: a causal mask that also hides padding ------------------------------
def _reference_causal_padding_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    positions = torch.arange(size, device=lengths.device)  # (L,)
    real_key = positions[None, :] < lengths[:, None]  # (B, L)
    past = torch.ones(size, size, dtype=torch.bool, device=lengths.device).tril()  # (L, L)
    return past[None, :, :] & real_key[:, None, :]  # (B, L, L)


def _test_causal_padding_mask(t: Trial, causal_padding_mask) -> None:
    lengths = torch.tensor([5, 3, 1], device=t.device)  # (B,)
    size = 5
    what = "my_causal_padding_mask(lengths=[5, 3, 1], size=5)"
    got = t.call(causal_padding_mask, lengths, size, what="my_causal_padding_mask(lengths, size)")
    expected = _reference_causal_padding_mask(lengths, size)  # (3, 5, 5)
    if got is None or not isinstance(got, torch.Tensor):
        t.expect_tensor(got, expected, what)  # explains None / wrong type
    t.expect(tuple(got.shape) == (3, 5, 5),
             f"{what} has shape {tuple(got.shape)}; expected (B, L, L) = (3, 5, 5): one (query, key) "
             "table per sequence.")
    t.expect(got.dtype == torch.bool,
             f"{what} has dtype {got.dtype}; a mask must be boolean (True = may attend). Build it from "
             "comparisons and & (or convert with .bool()).")
    t.expect(got.device == expected.device,
             f"{what} is on {got.device}; expected {expected.device} (create tensors with device=lengths.device).")
    if torch.equal(got, expected):
        pass
    elif torch.equal(got, ~expected):
        t.expect(False, f"{what} is inverted: True must mean 'may attend', the convention of "
                 "torch.nn.functional.scaled_dot_product_attention.")
    else:
        positions = torch.arange(size, device=t.device)  # (L,)
        real = positions[None, :] < lengths[:, None]  # (B, L)
        past = torch.ones(size, size, dtype=torch.bool, device=t.device).tril()  # (L, L)
        future = torch.ones(size, size, dtype=torch.bool, device=t.device).triu()  # (L, L)
        known = (
            (real[:, None, :].expand(3, size, size),
             "hides padding but not the future: combine it with the causal part, key j ≤ query i (torch.tril)"),
            (past.expand(3, size, size),
             "is causal but ignores the lengths: keys at positions ≥ length are padding and must be hidden"),
            (future[None] & real[:, None, :],
             "lets each query see the future instead of the past: a query i may attend to keys j ≤ i "
             "(lower triangle, torch.tril), not j ≥ i"),
            (expected & real[:, :, None],  # with a causal mask, the same as padding only the rows
             "hides the padded queries (whole rows). Only keys need hiding, so the (B, L) padding mask goes "
             "in the last dimension, real[:, None, :]: a padded query's output is ignored later anyway, "
             "and an all-False row would leave it nothing to attend to"),
        )
        for wrong, message in known:
            if torch.equal(got, wrong):
                t.expect(False, f"{what} {message}.")
        bad = (got != expected).nonzero()  # (number of wrong entries, 3)
        b, i, j = (int(n) for n in bad[0])
        t.expect(False, f"{what} is wrong at {len(bad)} of {expected.numel()} entries; the first is "
                 f"sequence {b}, query {i}, key {j}: got {bool(got[b, i, j])}, expected {bool(expected[b, i, j])}.")

    got = t.call(causal_padding_mask, torch.tensor([2, 4], device=t.device), 4,
                 what="my_causal_padding_mask(lengths, size)")
    expected = _reference_causal_padding_mask(torch.tensor([2, 4], device=t.device), 4)  # (2, 4, 4)
    t.expect(isinstance(got, torch.Tensor) and got.dtype == torch.bool and tuple(got.shape) == (2, 4, 4)
             and got.device == expected.device and torch.equal(got, expected),
             "my_causal_padding_mask(lengths=[2, 4], size=4) is wrong (it must not depend on fixed sizes: "
             "use `size` and `lengths` only).")


causal_padding_mask = Exercise(
    number="2.4",
    title="a causal mask that also hides padding",
    test=_test_causal_padding_mask,
    hints=[
        "Two masks, combined with &. The causal one is (L, L): True where key j ≤ query i "
        "(`torch.ones(L, L, dtype=torch.bool).tril()`). The padding one is (B, L): True where the key is "
        "a real token, i.e. its position is < the sequence's length.",
        "Positions: `torch.arange(size, device=lengths.device)` (L,). Compare (1, L) with (B, 1) to get "
        "(B, L). Padding concerns keys, so it goes in the last dimension: (B, 1, L). Then (1, L, L) & "
        "(B, 1, L) broadcasts to (B, L, L).",
        "positions = torch.arange(size, device=lengths.device)  # (L,)\n"
        "real_key = positions[None, :] < lengths[:, None]  # (B, L)\n"
        "past = torch.ones(size, size, dtype=torch.bool, device=lengths.device).tril()  # (L, L)\n"
        "return past[None, :, :] & real_key[:, None, :]  # (B, L, L)",
    ],
    success="each query sees itself, its past, and no padding.",
)
