"""Lesson 02: its derivations agree with attnlib and torch, and its exercise checkers judge correctly.

The notebook derives ``softmax``, ``masked_softmax``, ``scaled_dot_product_attention`` and
``causal_mask`` from scratch; these tests prove they cannot drift from attnlib's versions
(and from PyTorch's). The exercises transfer those ideas (the scale for inputs of variance
σ², a local-window mask, PyTorch's opposite mask convention); each checker accepts the
master's solution and other correct answers, and names the typical mistakes.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import attnlib
from attnlib.exercises import lesson02
from tests.notebook_tools import (
    assert_check_fails, assert_check_passes, assert_hints_build_up, exercise_solutions, gives_whole_solution, load_derivations,
)

NOTEBOOK = "02_softmax_and_attention.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


def _inputs(seed=0, B=2, H=3, Lq=5, Lk=7, d_k=8, d_v=4):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Lq, d_k, generator=generator)  # (B, H, Lq, d_k)
    k = torch.randn(B, H, Lk, d_k, generator=generator)  # (B, H, Lk, d_k)
    v = torch.randn(B, H, Lk, d_v, generator=generator)  # (B, H, Lk, d_v)
    return q, k, v


def _padding(lengths, size):
    return torch.arange(size)[None, :] < torch.tensor(lengths)[:, None]  # (B, size)


# ----- the notebook's derivations agree with attnlib and torch ----------------------------

def test_notebook_derives_the_four_functions(derived):
    for name in ("softmax", "masked_softmax", "scaled_dot_product_attention", "causal_mask"):
        assert callable(derived.get(name)), name


@pytest.mark.parametrize("shape", [(7,), (4, 7), (2, 3, 5, 7)])
@pytest.mark.parametrize("temperature", [0.1, 1.0, 3.0])
def test_derived_softmax_equals_torch_and_attnlib(derived, shape, temperature):
    x = 5 * torch.randn(*shape, generator=torch.Generator().manual_seed(3))  # (..., n)
    ours = derived["softmax"](x, temperature=temperature)  # (..., n)
    torch.testing.assert_close(ours, torch.softmax(x / temperature, dim=-1))
    torch.testing.assert_close(ours, attnlib.masked_softmax(x / temperature))


def test_derived_softmax_is_stable_and_rejects_bad_temperature(derived):
    x = torch.tensor([[1000.0, 999.0, 998.0], [-1000.0, -1001.0, -1002.0]])  # (2, 3)
    ours = derived["softmax"](x)  # (2, 3)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, torch.softmax(x, dim=-1))
    with pytest.raises(ValueError, match="temperature"):
        derived["softmax"](x, temperature=0.0)


def _masks(B=2, Lq=5, Lk=7):
    """Padding (B, 1, Lk), causal (Lq, Lk), both, and one with an all-False row, all broadcastable."""
    padding = _padding([7, 4], Lk)[:, None, :]  # (B, 1, Lk)
    causal = attnlib.causal_mask(Lk)[:Lq]  # (Lq, Lk), top-left aligned like torch
    both = padding & causal  # (B, Lq, Lk)
    empty = both.clone()  # (B, Lq, Lk)
    empty[1, 2] = False  # query 2 of sequence 1 may attend to nothing
    return {"none": None, "padding": padding, "causal": causal, "both": both, "empty": empty}


@pytest.mark.parametrize("which", ["none", "padding", "causal", "both", "empty"])
def test_derived_masked_softmax_equals_attnlib(derived, which):
    mask = _masks()[which]
    scores = 3 * torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(4))  # (B, Lq, Lk)
    scores.requires_grad_(True)
    ours = derived["masked_softmax"](scores, mask)  # (B, Lq, Lk)
    theirs = attnlib.masked_softmax(scores, mask)  # (B, Lq, Lk)
    torch.testing.assert_close(ours, theirs)
    assert torch.isfinite(ours).all()
    if mask is not None:
        assert (ours.detach()[~mask.expand_as(ours)] == 0).all()
    if which == "empty":
        assert (ours[1, 2] == 0).all()
    # the gradients agree too, and stay finite even through an all-masked row
    upstream = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(5))  # (B, Lq, Lk)
    (ours_grad,) = torch.autograd.grad((ours * upstream).sum(), scores)
    (theirs_grad,) = torch.autograd.grad((theirs * upstream).sum(), scores)
    assert torch.isfinite(ours_grad).all()
    torch.testing.assert_close(ours_grad, theirs_grad)


@pytest.mark.parametrize("which", ["none", "padding", "causal", "both", "empty"])
def test_derived_attention_equals_attnlib(derived, which):
    mask = _masks()[which]
    q, k, v = _inputs(seed=6)
    mask4 = None if mask is None else (mask[:, None] if mask.dim() == 3 else mask)  # (B, 1, Lq|1, Lk) or (Lq, Lk)
    output, weights = derived["scaled_dot_product_attention"](q, k, v, mask4)  # (B, H, Lq, d_v), (B, H, Lq, Lk)
    lib_output, lib_weights = attnlib.scaled_dot_product_attention(q, k, v, mask4, return_weights=True)
    torch.testing.assert_close(output, lib_output)
    torch.testing.assert_close(weights, lib_weights)
    torch.testing.assert_close(output, attnlib.scaled_dot_product_attention(q, k, v, mask4), atol=1e-5, rtol=1e-4)
    assert torch.isfinite(output).all()
    if which == "empty":
        assert (output[1, :, 2] == 0).all() and (weights[1, :, 2] == 0).all()
    else:  # torch defines a result wherever every query sees something
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask4)  # (B, H, Lq, d_v)
        torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-4)


def test_derived_attention_matches_torch_is_causal(derived):
    q, k, v = _inputs(seed=7, Lq=6, Lk=6)
    output, _ = derived["scaled_dot_product_attention"](q, k, v, derived["causal_mask"](6))
    torch.testing.assert_close(output, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(output, attnlib.scaled_dot_product_attention(q, k, v, causal=True), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("size", [0, 1, 2, 5])
def test_derived_causal_mask_equals_attnlib(derived, size):
    ours = derived["causal_mask"](size)  # (size, size)
    assert ours.dtype == torch.bool
    assert torch.equal(ours, attnlib.causal_mask(size))


# ----- the attnlib fix this lesson needed: no keys at all --------------------------------

def test_attnlib_attention_with_no_keys_gives_zeros():
    q = torch.randn(2, 3, 4)  # (B, Lq, d_k)
    k = torch.randn(2, 0, 4)  # (B, Lk=0, d_k)
    v = torch.randn(2, 0, 5)  # (B, Lk=0, d_v)
    output = attnlib.scaled_dot_product_attention(q, k, v)  # (B, Lq, d_v)
    assert output.shape == (2, 3, 5) and (output == 0).all()
    output, weights = attnlib.scaled_dot_product_attention(q, k, v, return_weights=True)
    assert weights.shape == (2, 3, 0) and (output == 0).all()
    assert attnlib.masked_softmax(torch.randn(2, 3, 0)).shape == (2, 3, 0)


# ----- Exercise 2.1: the scale for inputs of variance σ² ---------------------------------

def test_scale_checker_accepts_the_solution_and_other_forms(solutions, capsys):
    assert_check_passes(lesson02.scale, solutions["attention_scale"], capsys)
    assert_check_passes(lesson02.scale, lambda d_k, sigma: (sigma ** 4 * d_k) ** -0.5, capsys)
    assert_check_passes(lesson02.scale, lambda d_k, sigma: torch.tensor(1 / (sigma ** 2 * math.sqrt(d_k))), capsys)
    assert_check_passes(lesson02.scale, lambda d_k, sigma: np.float32(1 / (sigma ** 2 * math.sqrt(d_k))), capsys)


def test_the_scale_really_restores_unit_variance(solutions):
    """The claim behind exercise 2.1, measured: the solution's scale gives scores of variance ≈ 1."""
    generator = torch.Generator().manual_seed(7)
    for d_k, sigma in [(16, 3.0), (256, 0.5), (64, 1.0)]:
        q = sigma * torch.randn(50_000, d_k, generator=generator, dtype=torch.float64)  # (N, d_k)
        k = sigma * torch.randn(50_000, d_k, generator=generator, dtype=torch.float64)  # (N, d_k)
        scaled = solutions["attention_scale"](d_k, sigma) * (q * k).sum(-1)  # (N,)
        assert 0.95 < scaled.var().item() < 1.05, (d_k, sigma, scaled.var().item())
    assert solutions["attention_scale"](64, 1.0) == pytest.approx(1 / 8)


@pytest.mark.parametrize("wrong, fragments", [
    (lambda d_k, sigma: 1 / math.sqrt(d_k), ("ignores σ", "variance σ² = 9 come out with variance 8")),
    (lambda d_k, sigma: 1 / (sigma * math.sqrt(d_k)), ("divides by σ once", "σ⁴")),
    (lambda d_k, sigma: 1 / (sigma ** 2 * d_k), ("divides by d_k", "√d_k")),
    (lambda d_k, sigma: 1 / (sigma ** 4 * d_k), ("divides by the variance",)),
    (lambda d_k, sigma: 1 / (sigma ** 4 * math.sqrt(d_k)), ("σ⁴ where σ² belongs",)),
    (lambda d_k, sigma: sigma ** 2 / math.sqrt(d_k), ("multiplies by σ²",)),
    (lambda d_k, sigma: sigma ** 2 * math.sqrt(d_k), ("standard deviation of q·k itself",)),
    (lambda d_k, sigma: 0.3, ("is 0.3", "not 1")),
])
def test_scale_checker_names_the_classic_mistakes(wrong, fragments, capsys):
    assert_check_fails(lesson02.scale, wrong, capsys, "attention_scale(d_k=16, sigma=3.0)", *fragments)


def test_scale_checker_explains_odd_answers(capsys):
    def not_attempted(d_k, sigma):
        raise NotImplementedError("Exercise 2.1 (scale): replace this line with your solution")

    assert_check_fails(lesson02.scale, not_attempted, capsys, "not attempted")
    assert_check_fails(lesson02.scale, lambda d_k, sigma: None, capsys, "is None", "return")
    assert_check_fails(lesson02.scale, lambda d_k, sigma: torch.ones(2), capsys, "a single number")
    assert_check_fails(lesson02.scale, lambda d_k, sigma: float("nan"), capsys, "finite number")
    assert_check_fails(lesson02.scale, lambda d_k, sigma: "1/8", capsys, "is a str")
    assert_check_fails(lesson02.scale, lambda d_k, sigma: 1 / (sigma ** 2 * torch.sqrt(d_k)), capsys,
                       "raised an exception", "Tip:", "math.sqrt")


# ----- Exercise 2.2: a local-window causal mask -----------------------------------------

def _window(size, window, device=None):
    i = torch.arange(size, device=device)[:, None]  # (L, 1)
    j = torch.arange(size, device=device)[None, :]  # (1, L)
    return i, j


def test_local_mask_checker_accepts_the_solution_and_other_ways(solutions, capsys):
    assert_check_passes(lesson02.local_causal_mask, solutions["local_causal_mask"], capsys)

    def by_triangles(size, window, device=None):
        ones = torch.ones(size, size, dtype=torch.bool, device=device)  # (L, L)
        return ones.tril() & ones.triu(diagonal=1 - window)

    def by_distance(size, window, device=None):
        i, j = _window(size, window, device)
        return (i - j >= 0) & (i - j < window)

    assert_check_passes(lesson02.local_causal_mask, by_triangles, capsys)
    assert_check_passes(lesson02.local_causal_mask, by_distance, capsys)


def test_the_local_mask_really_limits_what_attention_sees(solutions):
    """With the solution's mask, an output ignores every value outside its window (the exercise's claim)."""
    size, window = 8, 3
    mask = solutions["local_causal_mask"](size, window)  # (L, L)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, size, 4, generator=generator)  # (B, L, d)
    values = torch.randn(1, size, 2, generator=generator)  # (B, L, d_v)
    output = attnlib.scaled_dot_product_attention(x, x, values, mask)  # (B, L, d_v)
    for j in range(size):
        changed = values.clone()  # (B, L, d_v)
        changed[:, j] += 100.0
        moved = (attnlib.scaled_dot_product_attention(x, x, changed, mask) - output).abs().amax(-1)[0]  # (L,)
        sees_j = (moved > 1e-4).nonzero().flatten().tolist()
        assert sees_j == list(range(j, min(j + window, size))), (j, sees_j)


@pytest.mark.parametrize("wrong, fragment", [
    (lambda size, window, device=None: ~_reference_local(size, window), "inverted"),
    (lambda size, window, device=None: _reference_local(size, window + 1), "4 positions, one too many"),
    (lambda size, window, device=None: _reference_local(size, window - 1), "only 2 position(s), one too few"),
    (lambda size, window, device=None: (_window(size, window)[0] - _window(size, window)[1]).abs() < window,
     "looks both ways"),
    (lambda size, window, device=None: torch.ones(size, size, dtype=torch.bool).tril(), "plain causal mask"),
    (lambda size, window, device=None: _window(size, window)[1] > _window(size, window)[0] - window,
     "hides nothing in the future"),
    (lambda size, window, device=None: _reference_local(size, window).T, "looks forward instead of back"),
    (lambda size, window, device=None: _reference_local(size, window).int(), "must be boolean"),
    (lambda size, window, device=None: _reference_local(size, window)[None], "has shape (1, 6, 6); expected (6, 6)"),
    (lambda size, window, device=None: _reference_local(6, 3), "local_causal_mask(size=5, window=1) has shape (6, 6)"),
    (lambda size, window, device=None: None, "is None"),
])
def test_local_mask_checker_names_the_classic_mistakes(wrong, fragment, capsys):
    assert_check_fails(lesson02.local_causal_mask, wrong, capsys, fragment)


def test_local_mask_checker_points_at_a_wrong_entry(capsys):
    def one_entry_off(size, window, device=None):
        mask = _reference_local(size, window)
        mask[size - 1, 0] = True
        return mask

    assert_check_fails(lesson02.local_causal_mask, one_entry_off, capsys, "wrong at 1 of 36 entries", "(5, 0)")


def _reference_local(size, window):
    i, j = _window(size, window)
    return (j <= i) & (j > i - window)


# ----- Exercise 2.3: masks in PyTorch's opposite convention ------------------------------

def _converted(attn_mask=None, key_padding_mask=None, *, invert=True, float_rule=lambda a: a == 0,
               padding_index=(slice(None), None, None, slice(None)), combine=torch.logical_and):
    """A conversion with one chosen rule at a time (the right ones by default)."""
    mask = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            mask = ~attn_mask if invert else attn_mask
        else:
            mask = float_rule(attn_mask)
    if key_padding_mask is not None:
        keys = key_padding_mask[padding_index]
        keys = ~keys if invert else keys
        mask = keys if mask is None else combine(mask, keys)
    return mask


def test_from_torch_masks_checker_accepts_the_solution_and_other_ways(solutions, capsys):
    assert_check_passes(lesson02.from_torch_masks, solutions["from_torch_masks"], capsys)
    assert_check_passes(lesson02.from_torch_masks, _converted, capsys)
    assert_check_passes(lesson02.from_torch_masks,
                        lambda a=None, k=None: _converted(a, k, float_rule=torch.isfinite), capsys)
    assert_check_passes(lesson02.from_torch_masks,
                        lambda a=None, k=None: _converted(a, k, float_rule=lambda m: ~m.bool()), capsys)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_the_converted_masks_give_nn_multihead_attentions_output(solutions, kind):
    """The claim behind exercise 2.3: with the converted mask, attnlib's MultiHeadAttention equals
    torch.nn.MultiheadAttention given the masks in torch's own convention (same weights)."""
    torch.manual_seed(0)
    B, Lq, Lk, D, H = 2, 4, 5, 8, 2
    torch_mha = torch.nn.MultiheadAttention(D, H, batch_first=True).eval()
    ours = attnlib.MultiHeadAttention(D, H).eval()
    ours.load_state_dict(torch_mha.state_dict())
    query, memory = torch.randn(B, Lq, D), torch.randn(B, Lk, D)  # (B, Lq, D), (B, Lk, D)
    hidden = torch.ones(Lq, Lk, dtype=torch.bool).triu(diagonal=1)  # (Lq, Lk), True = not allowed
    padding = torch.tensor([[False] * 4 + [True], [False] * 3 + [True] * 2])  # (B, Lk), True = padding
    if kind == "bool":
        attn_mask, torch_padding = hidden, padding
    else:  # torch wants both masks of one type: additive floats, 0 or -inf
        attn_mask = torch.zeros(Lq, Lk).masked_fill(hidden, float("-inf"))  # (Lq, Lk)
        torch_padding = torch.zeros(B, Lk).masked_fill(padding, float("-inf"))  # (B, Lk)
    expected, _ = torch_mha(query, memory, memory, attn_mask=attn_mask, key_padding_mask=torch_padding)
    mask = solutions["from_torch_masks"](attn_mask, padding)  # (B, 1, Lq, Lk), True = may attend
    torch.testing.assert_close(ours(query, memory, memory, mask=mask), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("wrong, fragments", [
    (lambda a=None, k=None: _converted(a, k, invert=False), ("keeps PyTorch's meaning", "Invert")),
    (lambda a=None, k=None: _converted(a, k, float_rule=lambda m: m.bool()), ("-inf counts as True", "attn_mask == 0")),
    (lambda a=None, k=None: _converted(a, k, float_rule=lambda m: ~m), ("raised an exception", "Tip:", "attn_mask == 0")),
    (lambda a=None, k=None: _converted(a, k, float_rule=lambda m: m), ("dtype torch.float32", "boolean")),
    (lambda a=None, k=None: _converted(a, k, padding_index=(slice(None), slice(None))),
     ("shape (2, 5)", "does not broadcast", "key_padding_mask[:, None, None, :]")),
    (lambda a=None, k=None: _converted(a, k, padding_index=(slice(None), None, slice(None), None)),
     ("shape (2, 1, 5, 1)", "query axis")),
    (lambda a=None, k=None: _converted(a, k, combine=torch.logical_or), ("*either*", "&, not |")),
    (lambda a=None, k=None: _converted(a, None if a is not None else k), ("ignores key_padding_mask",)),
    (lambda a=None, k=None: _converted(None if k is not None else a, k), ("ignores attn_mask",)),
    (lambda a=None, k=None: _converted(a, k) if (a is not None or k is not None) else torch.tensor(True),
     ("from_torch_masks(None, None) should return None",)),
])
def test_from_torch_masks_checker_names_the_classic_mistakes(wrong, fragments, capsys):
    assert_check_fails(lesson02.from_torch_masks, wrong, capsys, *fragments)


def test_from_torch_masks_checker_points_at_a_wrong_entry(capsys):
    def one_entry_off(a=None, k=None):
        mask = _converted(a, k)
        if mask is not None and mask.dim() == 4:
            mask = mask.clone()
            mask[0, 0, 0, 0] = ~mask[0, 0, 0, 0]
        return mask

    assert_check_fails(lesson02.from_torch_masks, one_entry_off, capsys, "stretched to the scores' shape", "(0, 0, 0, 0)")


# ----- every checker: odd answers, hints -----------------------------------------------------

EXERCISES = [(lesson02.scale, "attention_scale"), (lesson02.local_causal_mask, "local_causal_mask"),
             (lesson02.from_torch_masks, "from_torch_masks")]


@pytest.mark.parametrize("exercise, function", EXERCISES)
@pytest.mark.parametrize("answer", ["a string", 42, [1.0, 2.0], torch.zeros(3, dtype=torch.long), torch.zeros(2, 2),
                                    np.zeros(3)])
def test_checkers_explain_odd_answers_without_crashing(exercise, function, answer, capsys):
    message = assert_check_fails(exercise, lambda *args, **kwargs: answer, capsys)
    assert "could not be checked" not in message, message


@pytest.mark.parametrize("exercise, function", EXERCISES)
def test_checkers_report_exceptions_and_unsolved_stubs(exercise, function, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise {exercise.number} ({function}): replace this line with your solution")

    assert_check_fails(exercise, stub, capsys, "not attempted")
    assert_check_fails(exercise, lambda *args, **kwargs: [][1], capsys, "raised an exception", "IndexError")


@pytest.mark.parametrize("exercise, function", EXERCISES)
def test_hints_run_in_order_repeat_the_last_and_stop_short_of_the_solution(exercise, function, capsys):
    assert_hints_build_up(exercise, capsys)
    assert not gives_whole_solution(exercise.hints[-1], NOTEBOOK, function)
