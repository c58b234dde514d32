"""Lesson 02: its derivations agree with attnlib and torch, and its exercise checkers judge correctly.

The notebook derives ``softmax``, ``masked_softmax``, ``scaled_dot_product_attention`` and
``causal_mask`` from scratch; these tests prove they cannot drift from attnlib's versions
(and from PyTorch's), and that each checker accepts the master's solution and names the
typical mistakes.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import attnlib
from attnlib.exercises import lesson02
from tests.notebook_tools import assert_check_fails, assert_check_passes, exercise_solutions, load_derivations

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


# ----- Exercise 2.1: stable softmax ---------------------------------------------------------

def test_softmax_checker_accepts_the_solution(solutions, capsys):
    assert_check_passes(lesson02.softmax, solutions["my_softmax"], capsys)


def test_softmax_checker_explains_mistakes(capsys):
    def not_attempted(x):
        raise NotImplementedError("Exercise 2.1")

    assert_check_fails(lesson02.softmax, not_attempted, capsys, "not attempted")
    assert_check_fails(lesson02.softmax, lambda x: None, capsys, "forget to `return`")
    assert_check_fails(lesson02.softmax, lambda x: torch.exp(x) / torch.exp(x).sum(dim=-1, keepdim=True), capsys,
           "[1000.0, 999.0, 998.0]", "overflows", "Subtract the row's maximum")
    assert_check_fails(lesson02.softmax, lambda x: torch.exp(x - x.amax(dim=0, keepdim=True))
           / torch.exp(x - x.amax(dim=0, keepdim=True)).sum(dim=0, keepdim=True), capsys, "dim=0", "dim=-1")
    assert_check_fails(lesson02.softmax, lambda x: torch.exp(x - x.amax(dim=-1, keepdim=True)), capsys, "not normalised")
    assert_check_fails(lesson02.softmax, lambda x: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(dim=-1, keepdim=True),
           capsys, "second row", "each row's own maximum")
    assert_check_fails(lesson02.softmax, lambda x: torch.softmax(x.float(), dim=-1), capsys, "float64", "dtype")
    assert_check_fails(lesson02.softmax, lambda x: torch.softmax(x, dim=-1).numpy(), capsys, "numpy array")


# ----- Exercise 2.2: masked softmax ---------------------------------------------------------

def test_masked_softmax_checker_accepts_the_solution_and_attnlib(solutions, capsys):
    assert_check_passes(lesson02.masked_softmax, solutions["my_masked_softmax"], capsys)
    assert_check_passes(lesson02.masked_softmax, attnlib.masked_softmax, capsys)


def _fill_then_softmax(fill, nan_to_zero=False):
    def masked_softmax(scores, mask=None):
        if mask is not None:
            scores = scores.masked_fill(~mask, fill)  # (..., Lk)
        weights = torch.softmax(scores, dim=-1)  # (..., Lk)
        return torch.nan_to_num(weights, nan=0.0) if nan_to_zero else weights

    return masked_softmax


def test_masked_softmax_checker_explains_mistakes(capsys):
    def inverted(scores, mask=None):
        return attnlib.masked_softmax(scores, None if mask is None else ~mask)

    def zero_after(scores, mask=None):
        weights = torch.softmax(scores, dim=-1)  # (..., Lk)
        return weights if mask is None else weights * mask

    def max_before_masking(scores, mask=None):
        shifted = scores - scores.amax(dim=-1, keepdim=True)  # (..., Lk), max taken over hidden entries too
        if mask is not None:
            shifted = shifted.masked_fill(~mask, float("-inf"))
        exp = torch.exp(shifted)  # (..., Lk)
        return exp / exp.sum(dim=-1, keepdim=True).clamp_min(1e-30)

    assert_check_fails(lesson02.masked_softmax, inverted, capsys, "True means 'may attend'")
    assert_check_fails(lesson02.masked_softmax, _fill_then_softmax(0.0), capsys, "exp(0) = 1", "-inf")
    assert_check_fails(lesson02.masked_softmax, zero_after, capsys, "no longer sum")
    assert_check_fails(lesson02.masked_softmax, max_before_masking, capsys, "maximum after masking")
    assert_check_fails(lesson02.masked_softmax, _fill_then_softmax(float("-inf")), capsys, "all False gives NaN")
    assert_check_fails(lesson02.masked_softmax, _fill_then_softmax(-1e9), capsys, "uniform", "-1e9")
    assert_check_fails(lesson02.masked_softmax, lambda scores, mask: attnlib.masked_softmax(scores, mask.bool()), capsys,
           "my_masked_softmax(scores, None) raised an exception", "AttributeError")


def test_masked_softmax_checker_accepts_nan_to_num_version(capsys):
    assert_check_passes(lesson02.masked_softmax, _fill_then_softmax(float("-inf"), nan_to_zero=True), capsys)


# ----- Exercise 2.3: attention --------------------------------------------------------------

def test_attention_checker_accepts_the_solution_and_attnlib(solutions, capsys):
    assert_check_passes(lesson02.attention, solutions["my_attention"], capsys)
    assert_check_passes(lesson02.attention, attnlib.scaled_dot_product_attention, capsys)


def _attention(scale=None, dim=-1, mask_fn=lambda m: m, nan_to_zero=True, return_weights=False):
    """An attention with one deliberate mistake at a time."""

    def attention(q, k, v, mask=None):
        factor = 1 / math.sqrt(q.shape[-1]) if scale is None else scale(q, v)
        scores = q @ k.transpose(-2, -1) * factor  # (..., Lq, Lk)
        mask = None if mask is None else mask_fn(mask)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))  # (..., Lq, Lk)
        weights = torch.softmax(scores, dim=dim)  # (..., Lq, Lk)
        if nan_to_zero:
            weights = torch.nan_to_num(weights, nan=0.0)
        output = weights @ v  # (..., Lq, d_v)
        return (output, weights) if return_weights else output

    return attention


def test_attention_checker_explains_mistakes(capsys):
    assert_check_passes(lesson02.attention, _attention(), capsys)  # the helper without a mistake is right
    assert_check_fails(lesson02.attention, _attention(scale=lambda q, v: 1.0), capsys, "forgot the scale", "√d_k")
    assert_check_fails(lesson02.attention, _attention(scale=lambda q, v: 1 / q.shape[-1]), capsys, "divides the scores by d_k")
    assert_check_fails(lesson02.attention, _attention(scale=lambda q, v: math.sqrt(q.shape[-1])), capsys, "multiplies")
    assert_check_fails(lesson02.attention, _attention(scale=lambda q, v: 1 / math.sqrt(v.shape[-1])), capsys, "1/√d_v")
    assert_check_fails(lesson02.attention, _attention(dim=-2), capsys, "dim=-2", "dim=-1")
    assert_check_fails(lesson02.attention, _attention(return_weights=True), capsys, "tuple", "only the output")
    assert_check_fails(lesson02.attention, _attention(mask_fn=lambda m: None), capsys, "ignores the mask")
    assert_check_fails(lesson02.attention, _attention(mask_fn=lambda m: ~m), capsys, "where the mask is False")
    assert_check_fails(lesson02.attention, _attention(mask_fn=lambda m: m.transpose(-2, -1) if m.dim() == 2 else m), capsys,
           "positions 4 and 5 changed the outputs", "True means 'may attend'")
    assert_check_fails(lesson02.attention, _attention(nan_to_zero=False), capsys, "gets NaN", "zero output")


# ----- Exercise 2.4: causal padding mask ---------------------------------------------------

def test_causal_padding_mask_checker_accepts_the_solution(solutions, capsys):
    assert_check_passes(lesson02.causal_padding_mask, solutions["my_causal_padding_mask"], capsys)


def _real(lengths, size):
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]  # (B, L)


def _past(size, device):
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()  # (L, L)


def test_causal_padding_mask_checker_explains_mistakes(solutions, capsys):
    right = solutions["my_causal_padding_mask"]
    exercise = lesson02.causal_padding_mask
    assert_check_fails(exercise, lambda lengths, size: ~right(lengths, size), capsys, "inverted")
    assert_check_fails(exercise, lambda lengths, size: right(lengths, size).int(), capsys, "must be boolean")
    assert_check_fails(exercise, lambda lengths, size: _real(lengths, size), capsys, "shape (3, 5)", "(B, L, L)")
    assert_check_fails(exercise,
           lambda lengths, size: _real(lengths, size)[:, None, :].expand(-1, size, -1), capsys, "not the future")
    assert_check_fails(exercise,
           lambda lengths, size: _past(size, lengths.device).expand(len(lengths), -1, -1), capsys,
           "ignores the lengths")
    assert_check_fails(exercise,
           lambda lengths, size: _past(size, lengths.device).T[None] & _real(lengths, size)[:, None, :], capsys,
           "future instead of the past")
    assert_check_fails(exercise,
           lambda lengths, size: right(lengths, size) & _real(lengths, size)[:, :, None], capsys,
           "hides the padded queries")
    assert_check_fails(exercise,  # padding on the rows only: with causality, the same mask as above
           lambda lengths, size: _past(size, lengths.device)[None] & _real(lengths, size)[:, :, None], capsys,
           "hides the padded queries", "last dimension")
    assert_check_fails(exercise, lambda lengths, size: right(torch.tensor([5, 3, 1], device=lengths.device), 5), capsys,
           "fixed sizes")


@pytest.mark.parametrize("name", ["softmax", "masked_softmax", "attention", "causal_padding_mask"])
@pytest.mark.parametrize("answer", ["a string", 42, [1.0, 2.0], torch.zeros(3, dtype=torch.long), torch.zeros(2, 2)])
def test_checkers_explain_odd_answers_without_crashing(name, answer, capsys):
    out = assert_check_fails(getattr(lesson02, name), lambda *args, **kwargs: answer, capsys)
    assert "could not be checked" not in out, out


def test_checkers_add_tips_to_classic_exceptions(capsys):
    def no_keepdim(x):
        shifted = x - x.amax(dim=-1)  # (4, 7) - (4,): does not broadcast
        return torch.exp(shifted) / torch.exp(shifted).sum(dim=-1)

    def ignores_none(scores, mask=None):
        return attnlib.masked_softmax(scores.masked_fill(~mask, float("-inf")))

    def full_transpose(q, k, v, mask=None):
        return attnlib.masked_softmax(q @ k.permute(*range(k.dim() - 1, -1, -1)) / math.sqrt(q.shape[-1]), mask) @ v

    assert_check_fails(lesson02.softmax, no_keepdim, capsys, "raised an exception", "Tip:", "keepdim=True")
    assert_check_fails(lesson02.masked_softmax, ignores_none, capsys, "my_masked_softmax(scores, None)", "Tip:",
           "if mask is not None")
    assert_check_fails(lesson02.attention, full_transpose, capsys, "raised an exception", "Tip:", "k.transpose(-2, -1)")


def test_hints_run_in_order_and_repeat_the_last(capsys):
    for checker in (lesson02.softmax, lesson02.masked_softmax, lesson02.attention, lesson02.causal_padding_mask):
        checker._hints_given = 0
        total = len(checker.hints)
        assert 2 <= total <= 4
        for i in range(total + 1):
            checker.hint()
            out = capsys.readouterr().out
            assert f"Hint {min(i + 1, total)}/{total} for Exercise {checker.number}" in out
        checker._hints_given = 0
