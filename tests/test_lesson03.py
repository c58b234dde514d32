"""Lesson 03: its derivation agrees with attnlib.QKVProjection, and its checkers judge correctly."""

import math

import pytest
import torch
import torch.nn.functional as F

import attnlib
from attnlib.exercises import lesson03
from tests.notebook_tools import assert_check_fails, assert_check_passes, exercise_solutions, load_derivations

NOTEBOOK = "03_queries_keys_values.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


# ----- the derivation agrees with attnlib.QKVProjection ---------------------------------
def test_notebook_derives_the_projection(derived):
    for name in ("project_qkv", "qkv_attention"):
        assert callable(derived.get(name)), name


@pytest.mark.parametrize("d_model, d_k, d_v", [(16, 8, 12), (8, 8, 8), (5, 3, 1)])
@pytest.mark.parametrize("seed", [0, 1])
def test_derived_projection_equals_qkv_projection(derived, d_model, d_k, d_v, seed):
    torch.manual_seed(seed)
    projection = attnlib.QKVProjection(d_model, d_k, d_v)
    W_Q = projection.w_q.weight.detach().T  # (d_model, d_k)
    W_K = projection.w_k.weight.detach().T  # (d_model, d_k)
    W_V = projection.w_v.weight.detach().T  # (d_model, d_v)
    asking = torch.randn(3, 4, d_model)  # (B, Lq, d_model)
    answering = torch.randn(3, 7, d_model)  # (B, Lk, d_model)
    with torch.no_grad():
        ours = derived["project_qkv"](asking, answering, W_Q, W_K, W_V)
        theirs = projection(asking, answering)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b)
        output, weights = derived["qkv_attention"](asking, answering, W_Q, W_K, W_V)
        their_output, their_weights = projection.attend(asking, answering, return_weights=True)
    torch.testing.assert_close(output, their_output)
    torch.testing.assert_close(weights, their_weights)
    torch.testing.assert_close(output, F.scaled_dot_product_attention(*theirs))


def test_derived_projection_learns_like_the_module(derived):
    """Same gradients: the derivation is the module, not just its forward values."""
    torch.manual_seed(0)
    projection = attnlib.QKVProjection(6, 4, 5)
    W = [layer.weight.detach().T.clone().requires_grad_() for layer in (projection.w_q, projection.w_k, projection.w_v)]
    asking, answering = torch.randn(2, 3, 6), torch.randn(2, 4, 6)
    derived["qkv_attention"](asking, answering, *W)[0].square().sum().backward()
    projection.attend(asking, answering).square().sum().backward()
    for ours, layer in zip(W, (projection.w_q, projection.w_k, projection.w_v)):
        torch.testing.assert_close(ours.grad, layer.weight.grad.T)


# ----- Exercise 3.1: soft lookup --------------------------------------------------------
def test_soft_lookup_checker_accepts_the_solution(solutions, capsys):
    assert_check_passes(lesson03.soft_lookup, solutions["soft_lookup"], capsys)
    assert_check_passes(lesson03.soft_lookup,
            lambda q, k, v, t: attnlib.scaled_dot_product_attention(q, k, v, scale=1 / t), capsys)


@pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")  # the learner's keys.T on a 3-D tensor
def test_soft_lookup_checker_explains_mistakes(capsys):
    check = lesson03.soft_lookup

    def no_temperature(q, k, v, t):
        return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v

    def times_temperature(q, k, v, t):
        return torch.softmax(q @ k.transpose(-2, -1) * t, dim=-1) @ v

    def sqrt_d(q, k, v, t):
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v

    def over_queries(q, k, v, t):
        return torch.softmax(q @ k.transpose(-2, -1) / t, dim=-2) @ v

    def raw_scores(q, k, v, t):
        return (q @ k.transpose(-2, -1) / t) @ v

    def weights_only(q, k, v, t):
        return torch.softmax(q @ k.transpose(-2, -1) / t, dim=-1)

    def both(q, k, v, t):
        weights = torch.softmax(q @ k.transpose(-2, -1) / t, dim=-1)
        return weights @ v, weights

    def plain_transpose(q, k, v, t):
        return torch.softmax(q @ k.T / t, dim=-1) @ v  # right for 2-D keys only

    def unstable(q, k, v, t):
        e = torch.exp(q @ k.transpose(-2, -1) / t)
        return e / e.sum(dim=-1, keepdim=True) @ v

    assert_check_fails(check, no_temperature, capsys, "ignores the temperature")
    assert_check_fails(check, times_temperature, capsys, "multiplies the scores by the temperature")
    assert_check_fails(check, sqrt_d, capsys, "scales the scores by 1/√d")
    assert_check_fails(check, over_queries, capsys, "normalises the weights over the queries")
    assert_check_fails(check, raw_scores, capsys, "uses the raw scores as weights")
    assert_check_fails(check, weights_only, capsys, "those are the weights")
    assert_check_fails(check, both, capsys, "returned a tuple of 2 items")
    assert_check_fails(check, plain_transpose, capsys, "for a batch", "raised an exception", "keys.transpose(-2, -1)")
    assert_check_fails(check, unstable, capsys, "NaN or inf when the scores are huge", "torch.softmax")


def test_soft_lookup_checker_handles_broken_code(capsys):
    def not_attempted(q, k, v, t):
        raise NotImplementedError("Exercise 3.1")

    def forgot_return(q, k, v, t):
        torch.softmax(q @ k.transpose(-2, -1) / t, dim=-1) @ v

    def numpy_answer(q, k, v, t):
        return (torch.softmax(q @ k.transpose(-2, -1) / t, dim=-1) @ v).numpy()

    assert_check_fails(lesson03.soft_lookup, not_attempted, capsys, "not attempted yet")
    assert_check_fails(lesson03.soft_lookup, forgot_return, capsys, "is None", "return")
    assert_check_fails(lesson03.soft_lookup, numpy_answer, capsys, "numpy array")
    assert_check_fails(lesson03.soft_lookup, "soft_lookup", capsys, "expected a function")


# ----- Exercise 3.2: split_qkv ----------------------------------------------------------
def test_split_qkv_checker_accepts_the_solution(solutions, capsys):
    assert_check_passes(lesson03.split_qkv, solutions["split_qkv"], capsys)


def test_split_qkv_checker_explains_mistakes(capsys):
    check = lesson03.split_qkv

    def swapped(x, w, d_k):
        p = x @ w
        return p[..., d_k : 2 * d_k], p[..., :d_k], p[..., 2 * d_k :]

    def v_too_narrow(x, w, d_k):
        p = x @ w
        return p[..., :d_k], p[..., d_k : 2 * d_k], p[..., -d_k:]

    def one_tensor(x, w, d_k):
        return x @ w

    def two_items(x, w, d_k):
        p = x @ w
        return p[..., :d_k], p[..., d_k:]

    def first_dimension_slicing(x, w, d_k):
        p = x @ w
        return p[:, :d_k], p[:, d_k : 2 * d_k], p[:, 2 * d_k :]

    def forgot_return(x, w, d_k):
        x @ w

    def transposed(x, w, d_k):
        p = x @ w.T
        return p[..., :d_k], p[..., d_k : 2 * d_k], p[..., 2 * d_k :]

    assert_check_fails(check, swapped, capsys, "q and k are swapped")
    assert_check_fails(check, v_too_narrow, capsys, "the last d_k columns", "after the first 2·d_k")
    assert_check_fails(check, one_tensor, capsys, "returned one tensor of shape (5, 10)")
    assert_check_fails(check, two_items, capsys, "returned a tuple of 2 items")
    assert_check_fails(check, first_dimension_slicing, capsys, "for a batch x (2, 7, 6)", "[..., :d_k]")
    assert_check_fails(check, forgot_return, capsys, "returned None")
    assert_check_fails(check, transposed, capsys, "raised an exception")


# ----- Exercise 3.3: recall accuracy ----------------------------------------------------
def test_recall_accuracy_checker_accepts_the_solution(solutions, capsys):
    assert_check_passes(lesson03.recall_accuracy, solutions["recall_accuracy"], capsys)
    assert_check_passes(lesson03.recall_accuracy, lambda logits, t: (logits.argmax(-1) == t).float().mean(), capsys)  # 0-d tensor


def test_recall_accuracy_checker_explains_mistakes(capsys):
    check = lesson03.recall_accuracy
    assert_check_fails(check, lambda logits, t: 100 * (logits.argmax(-1) == t).float().mean().item(), capsys, "a percentage")
    assert_check_fails(check, lambda logits, t: (logits.argmax(-1) == t).sum().item(), capsys, "the number of right answers")
    assert_check_fails(check, lambda logits, t: (logits.argmax(-1) == t).float(), capsys, "one entry per example")
    assert_check_fails(check, lambda logits, t: (logits.argmax(0) == t).float().mean().item(), capsys, "raised an exception")
    assert_check_fails(check, lambda logits, t: (logits.argmin(-1) == t).float().mean().item(), capsys, "off by")
    assert_check_fails(check, lambda logits, t: None, capsys, "is None")
    assert_check_fails(check, lambda logits, t: "62.5%", capsys, "a str; a number was expected")
