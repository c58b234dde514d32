"""Exercises of lesson 02 (softmax and scaled dot-product attention): transfer its ideas.

The lesson derives softmax, the 1/√d_k scale and masks; the exercises ask for what it
did not show: the scale when the inputs are not of variance one, a mask for a new
pattern (a local window), and masks written in PyTorch's opposite convention. Each
checker first looks for the classic mistakes (a forgotten σ, an off-by-one window, a
mask read the wrong way round, padding on the wrong axis, ...) and names them; only
then does it fall back to a plain comparison.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._core import Exercise, Failure, Trial


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


def _expect_boolean_mask(t: Trial, got, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """``got`` must be a boolean tensor of ``shape`` on the CPU; say which of these it is not."""
    if not isinstance(got, torch.Tensor):
        t.expect_tensor(got, torch.zeros(shape, dtype=torch.bool), what)  # explains None, lists, arrays
    t.expect(tuple(got.shape) == shape, f"{what} has shape {tuple(got.shape)}; expected {shape}.")
    t.expect(got.dtype == torch.bool,
             f"{what} has dtype {got.dtype}; a mask must be boolean (True = may attend). Build it from "
             "comparisons combined with & (or convert with .bool()).")
    t.expect(got.device.type == "cpu",
             f"{what} is on {got.device}; expected the CPU (create it on the `device` you are given, "
             "which is None here).")
    return got


def _first_difference(got: torch.Tensor, expected: torch.Tensor) -> str:
    bad = (got != expected).nonzero()  # (number of wrong entries, ndim)
    where = tuple(int(n) for n in bad[0])
    return (f"wrong at {len(bad)} of {expected.numel()} entries; the first is at index {where}: "
            f"got {bool(got[where])}, expected {bool(expected[where])}")


# ----- Exercise 2.1: the scale for inputs of variance σ² ---------------------------------
_SQRT_TIP = (
    "must be Tensor",
    "d_k and sigma are plain Python numbers: use math.sqrt (torch.sqrt needs a tensor).",
)


def _reference_scale(d_k: int, sigma: float) -> float:
    return 1.0 / (sigma ** 2 * math.sqrt(d_k))  # Var(q·k) = d_k σ⁴


def _scaled_variance(t: Trial, scale: float, d_k: int, sigma: float, pairs: int = 20_000) -> float:
    """The variance of ``scale · q·k`` over random pairs whose entries have variance σ²."""
    q = sigma * t.randn(pairs, d_k, dtype=torch.float64)  # (N, d_k)
    k = sigma * t.randn(pairs, d_k, dtype=torch.float64)  # (N, d_k)
    return float((scale * (q * k).sum(dim=-1)).var())


def _as_number(got) -> float | None:
    """``got`` as a float when it is one real number (Python, numpy or a 1-element tensor), else None."""
    if isinstance(got, torch.Tensor):
        return float(got.item()) if got.numel() == 1 and not got.dtype == torch.bool else None
    if isinstance(got, np.ndarray):
        return float(got.item()) if got.size == 1 else None
    if isinstance(got, (int, float, np.integer, np.floating)) and not isinstance(got, bool):
        return float(got)
    return None


def _test_scale(t: Trial, attention_scale) -> None:
    for d_k, sigma in ((16, 3.0), (64, 1.0), (256, 0.5), (8, 2.0)):  # σ ≠ 1 first: it tells mistakes apart
        what = f"attention_scale(d_k={d_k}, sigma={sigma})"
        got = _call(t, attention_scale, d_k, sigma, what=what, tips=(_SQRT_TIP,))
        expected = _reference_scale(d_k, sigma)
        number = _as_number(got)
        if number is not None and math.isfinite(number) and not math.isclose(number, expected, rel_tol=1e-4):
            variance = _scaled_variance(t, number, d_k, sigma)
            measured = (f"(with it, the scores of 20 000 random pairs whose entries have variance σ² = "
                        f"{sigma ** 2:g} come out with variance {variance:.3g}, not 1)")
            mistakes = (
                (1 / math.sqrt(d_k), "ignores σ: 1/√d_k is right only for σ = 1. Each entry now has "
                                     "variance σ², so each product q_i·k_i has a different variance"),
                (1 / (sigma * math.sqrt(d_k)), "divides by σ once, but both q and k carry a σ: each product "
                                               "q_i·k_i has variance σ²·σ² = σ⁴"),
                (1 / (sigma ** 2 * d_k), "divides by d_k: the variance of q·k grows like d_k, so its "
                                         "standard deviation grows like √d_k"),
                (1 / (sigma ** 4 * d_k), "divides by the variance, d_k·σ⁴; the scale divides by the "
                                         "standard deviation, its square root"),
                (1 / (sigma ** 4 * math.sqrt(d_k)), "has σ⁴ where σ² belongs: σ⁴ is the variance of one "
                                                    "product; the standard deviation of the sum has σ²"),
                (sigma ** 2 / math.sqrt(d_k), "multiplies by σ² instead of dividing by it"),
                (sigma ** 2 * math.sqrt(d_k), "is the standard deviation of q·k itself; the scale is one "
                                              "over it"),
            )
            for wrong, message in mistakes:
                if math.isclose(number, wrong, rel_tol=1e-4):
                    t.expect(False, f"{what} = {number:.4g} {message} {measured}.")
            t.expect(False, f"{what} is {number:.4g} {measured}.")
        t.expect_number(got, expected, what, atol=0.0, rtol=1e-4)


scale = Exercise(
    number="2.1",
    title="the scale for inputs of variance σ²",
    test=_test_scale,
    hints=[
        "q·k = q_1 k_1 + ... + q_d k_d, a sum of d_k independent products. Start with one product: its mean "
        "is E[q_i]·E[k_i] = 0, and its variance is E[(q_i k_i)²] = E[q_i²]·E[k_i²].",
        "E[q_i²] is the variance plus the squared mean: σ² + 0. So each product has variance σ²·σ² = σ⁴, and "
        "the variances of the d_k independent products add up: Var(q·k) = d_k·σ⁴.",
        "Multiplying by a number c multiplies the variance by c². Choose c so that c²·d_k·σ⁴ = 1, and check "
        "that your formula gives 1/√d_k for σ = 1.",
    ],
    success="the scores are back at variance 1, whatever the size of the entries.",
)


# ----- Exercise 2.2: a local-window causal mask ---------------------------------------
def _reference_local_mask(size: int, window: int) -> torch.Tensor:
    i = torch.arange(size)[:, None]  # (L, 1): query positions
    j = torch.arange(size)[None, :]  # (1, L): key positions
    return (j <= i) & (j > i - window)  # (L, L)


def _test_local_mask(t: Trial, local_causal_mask) -> None:
    for size, window in ((6, 3), (5, 1), (7, 2), (4, 10)):
        what = f"local_causal_mask(size={size}, window={window})"
        got = t.call(local_causal_mask, size, window, what=what)
        got = _expect_boolean_mask(t, got, (size, size), what)
        expected = _reference_local_mask(size, window)  # (L, L)
        if torch.equal(got, expected):
            continue
        i = torch.arange(size)[:, None]  # (L, 1)
        j = torch.arange(size)[None, :]  # (1, L)
        causal = j <= i  # (L, L)
        known = (
            (~expected, "is inverted: True must mean 'may attend', the convention of this course and of "
                        "torch.nn.functional.scaled_dot_product_attention"),
            (causal & (j >= i - window), f"lets each query see {window + 1} positions, one too many: the window "
                                         "counts the query itself, so query i sees keys i - window + 1 to i "
                                         "(j > i - window, not j >= i - window)"),
            (causal & (j > i - window + 1), f"lets each query see only {window - 1} position(s), one too few: "
                                            "query i sees itself and the window - 1 keys before it"),
            ((i - j).abs() < window, "looks both ways: keys after the query are visible. The window is "
                                     "causal: keep j <= i as well"),
            (causal, "is the plain causal mask: the window is missing, so far-away keys stay visible"),
            ((j > i - window), "hides nothing in the future: combine the window with the causal part, j <= i"),
            ((j >= i) & (j < i + window), "looks forward instead of back: query i may see keys i - window + 1 "
                                          "to i, not i to i + window - 1"),
        )
        for wrong, message in known:
            if torch.equal(got, wrong):
                t.expect(False, f"{what} {message}.")
        t.expect(False, f"{what} is {_first_difference(got, expected)}.")


local_causal_mask = Exercise(
    number="2.2",
    title="a local-window causal mask",
    test=_test_local_mask,
    hints=[
        "Build it from positions: `i = torch.arange(size, device=device)[:, None]` is a column of query "
        "positions (L, 1), `j = torch.arange(size, device=device)[None, :]` a row of key positions (1, L). "
        "Comparisons between them broadcast to (L, L).",
        "Two conditions, combined with &: the key is not in the future (j <= i), and it is one of the last "
        "`window` positions. Count on an example: with window 3, query 5 may see keys 3, 4 and 5.",
        "The key line: section 9's causal part, and the window on top of it.\n"
        "return (j <= i) & (j > i - window)  # (L, L)",
    ],
    success="each position sees itself and the window - 1 positions before it, nothing else.",
)


# ----- Exercise 2.3: masks in PyTorch's opposite convention --------------------------------
B, H, LQ, LK = 2, 3, 4, 5  # the scores these masks must fit: (B, H, Lq, Lk)
_INVERT_FLOAT_TIP = (
    "only implemented on integer and Boolean",
    "a float mask cannot be inverted with ~. Compare it instead: a float attn_mask allows a position "
    "where it is 0 (`attn_mask == 0`).",
)


def _torch_masks() -> dict[str, torch.Tensor]:
    """PyTorch-style masks for (B, H, Lq, Lk) scores: True (or -inf) = hidden."""
    hidden_future = torch.ones(LQ, LK, dtype=torch.bool).triu(diagonal=1)  # (Lq, Lk), True = not allowed
    additive = torch.zeros(LQ, LK).masked_fill(hidden_future, float("-inf"))  # (Lq, Lk), 0 or -inf
    padding = torch.tensor([[False] * 4 + [True], [False] * 2 + [True] * 3])  # (B, Lk), True = padding
    return {"bool": hidden_future, "float": additive, "padding": padding}


def _reference_from_torch(attn_mask, key_padding_mask):
    mask = None
    if attn_mask is not None:
        mask = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask == 0  # (Lq, Lk)
    if key_padding_mask is not None:
        keys = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
        mask = keys if mask is None else mask & keys  # (B, 1, Lq, Lk)
    return mask


def _on_scores(mask: torch.Tensor) -> torch.Tensor:
    """A mask stretched to the scores' shape (B, H, Lq, Lk)."""
    return torch.broadcast_to(mask, (B, H, LQ, LK))


def _test_from_torch_masks(t: Trial, from_torch_masks) -> None:
    masks = _torch_masks()
    cases = (
        (None, masks["padding"], "key_padding_mask only (B, Lk) = (2, 5)"),
        (masks["bool"], None, "a boolean attn_mask only (Lq, Lk) = (4, 5)"),
        (masks["float"], None, "a float attn_mask only (0 = allowed, -inf = hidden)"),
        (masks["bool"], masks["padding"], "a boolean attn_mask and a key_padding_mask"),
        (masks["float"], masks["padding"], "a float attn_mask and a key_padding_mask"),
    )
    for attn_mask, key_padding_mask, case in cases:
        what = f"from_torch_masks with {case}"
        got = _call(t, from_torch_masks, attn_mask, key_padding_mask, what=what, tips=(_INVERT_FLOAT_TIP,))
        expected = _on_scores(_reference_from_torch(attn_mask, key_padding_mask))  # (B, H, Lq, Lk)
        if got is None or not isinstance(got, torch.Tensor):
            t.expect_tensor(got, expected, what)  # explains None, lists, arrays
        t.expect(got.dtype == torch.bool,
                 f"{what} has dtype {got.dtype}; this course's masks are boolean, True = may attend. "
                 "(A float attn_mask is converted by comparing it, e.g. `attn_mask == 0`.)")
        try:
            stretched = _on_scores(got)  # (B, H, Lq, Lk)
        except RuntimeError:
            tip = ""
            if tuple(got.shape) == (B, LK):
                tip = (" A (B, Lk) mask lines up with the scores from the right, so B would meet Lq: insert "
                       "the head and query dimensions, key_padding_mask[:, None, None, :] (B, 1, 1, Lk).")
            elif tuple(got.shape)[-2:] == (LK, 1):
                tip = (" The padding sits on the query axis (rows): key_padding_mask says which *keys* are "
                       "padding, so it belongs in the last dimension, key_padding_mask[:, None, None, :].")
            t.expect(False, f"{what} has shape {tuple(got.shape)}, which does not broadcast against scores "
                     f"of shape (B, H, Lq, Lk) = {(B, H, LQ, LK)}.{tip}")
        if torch.equal(stretched, expected):
            continue
        if attn_mask is not None and attn_mask.is_floating_point() and key_padding_mask is None:
            if torch.equal(stretched, _on_scores(attn_mask.bool())):
                t.expect(False, f"{what} is True where the float mask is -inf, i.e. where attention is hidden "
                         "(`attn_mask.bool()` does that: -inf counts as True). Allowed positions are where the "
                         "float mask is 0: `attn_mask == 0`.")
        if torch.equal(stretched, ~expected):
            t.expect(False, f"{what} keeps PyTorch's meaning: there True means hidden, here True means "
                     "'may attend'. Invert the boolean masks with ~.")
        if key_padding_mask is not None and attn_mask is not None:
            allowed_attn = _reference_from_torch(attn_mask, None)  # (Lq, Lk)
            allowed_keys = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
            if torch.equal(stretched, _on_scores(allowed_attn | allowed_keys)):
                t.expect(False, f"{what} lets a key through when *either* mask allows it. A key may be "
                         "attended only if both allow it: combine with &, not |.")
            if torch.equal(stretched, _on_scores(allowed_attn)):
                t.expect(False, f"{what} ignores key_padding_mask when attn_mask is given: combine both.")
            if torch.equal(stretched, _on_scores(allowed_keys)):
                t.expect(False, f"{what} ignores attn_mask when key_padding_mask is given: combine both.")
        t.expect(False, f"{what}, stretched to the scores' shape {(B, H, LQ, LK)}, is "
                 f"{_first_difference(stretched, expected)}.")

    what = "from_torch_masks(None, None)"
    got = _call(t, from_torch_masks, None, None, what=what, tips=(_INVERT_FLOAT_TIP,))
    t.expect(got is None, f"{what} should return None (no mask: nothing is hidden), not {type(got).__name__}.")


from_torch_masks = Exercise(
    number="2.3",
    title="masks in PyTorch's opposite convention",
    test=_test_from_torch_masks,
    hints=[
        "Two differences from this course's convention. True means *hidden*: invert a boolean mask with `~`. "
        "A float attn_mask is *added* to the scores: a position is allowed where it is 0 and hidden where it "
        "is -inf; `~` does not work on floats, so compare instead, `attn_mask == 0`.",
        "key_padding_mask (B, Lk) is about keys, so it must line up with the last dimension of the scores "
        "(B, H, Lq, Lk). Insert the head and query dimensions: `key_padding_mask[:, None, None, :]` is "
        "(B, 1, 1, Lk).",
        "A key may be attended only if both masks allow it: combine the converted masks with `&`; "
        "(Lq, Lk) & (B, 1, 1, Lk) broadcasts to (B, 1, Lq, Lk). A missing mask (None) hides nothing, and "
        "with neither mask return None.",
    ],
    success="PyTorch's masks in this course's convention, on the right axes, combined with &.",
)
