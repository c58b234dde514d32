"""Lesson 03: its derivation agrees with attnlib.QKVProjection, and its checkers judge correctly."""

import math

import pytest
import torch
import torch.nn.functional as F

import attnlib
from attnlib.exercises import lesson03
from tests.notebook_tools import (
    assert_check_fails,
    assert_check_is_quick_and_leaves_the_random_stream_alone,
    assert_check_passes,
    assert_hints_build_up,
    assert_last_hint_alone_fails,
    exercise_solutions,
    gives_whole_solution,
    load_derivations,
)

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


# ----- Exercise 3.3: a lookup set by hand -----------------------------------------------
def _key_reader(num_keys, num_values, scale=None):
    d = num_keys + num_values
    features = torch.eye(d)  # (d, d)
    scale = 10 * math.sqrt(num_keys) if scale is None else scale
    return scale * features[:, :num_keys], features[:, :num_keys], features[:, num_keys:]


def test_recall_weights_checker_accepts_the_solution_and_other_right_answers(solutions, capsys):
    assert_check_passes(lesson03.recall_weights, solutions["recall_weights"], capsys)

    def full_width(num_keys, num_values):  # d_k = d: the value features land where no query ever looks
        d = num_keys + num_values
        return 20 * math.sqrt(d) * torch.eye(d), torch.eye(d), 2 * torch.eye(d)[:, num_keys:]

    def sharp_keys(num_keys, num_values):  # the scale on W_K instead of W_Q, as a list
        W_Q, W_K, W_V = _key_reader(num_keys, num_values, scale=1.0)
        return [W_Q, 40 * W_K, W_V]

    assert_check_passes(lesson03.recall_weights, full_width, capsys)
    assert_check_passes(lesson03.recall_weights, sharp_keys, capsys)


def test_recall_weights_checker_explains_mistakes(capsys):
    check = lesson03.recall_weights

    def too_soft(nk, nv):
        return _key_reader(nk, nv, scale=1.0)

    def reads_values(nk, nv):
        d = nk + nv
        return 10 * math.sqrt(d) * torch.eye(d), torch.eye(d) + torch.eye(d).roll(nk, 0), _key_reader(nk, nv)[2]

    def hands_over_keys(nk, nv):
        W_Q, W_K, _ = _key_reader(nk, nv)
        return W_Q, W_K, torch.eye(nk + nv)[:, :nv]

    def negative(nk, nv):
        W_Q, W_K, W_V = _key_reader(nk, nv)
        return -W_Q, W_K, W_V

    def whole_slot(nk, nv):
        W_Q, W_K, _ = _key_reader(nk, nv)
        return W_Q, W_K, torch.eye(nk + nv)

    def no_query(nk, nv):
        W_Q, W_K, W_V = _key_reader(nk, nv)
        return 0 * W_Q, W_K, W_V

    def identity(nk, nv):
        d = nk + nv
        return torch.eye(d), torch.eye(d), torch.eye(d)[:, nk:]

    def mixed_widths(nk, nv):
        W_Q, W_K, W_V = _key_reader(nk, nv)
        return W_Q, torch.eye(nk + nv), W_V

    def integers(nk, nv):
        return tuple(W.long() for W in _key_reader(nk, nv))

    def transposed(nk, nv):
        return tuple(W.T for W in _key_reader(nk, nv))

    def overflowing(nk, nv):
        W_Q, W_K, W_V = _key_reader(nk, nv)
        return W_Q * float("inf"), W_K, W_V

    assert_check_fails(check, too_soft, capsys, "too softly", "0.95", "√d_k")
    assert_check_fails(check, identity, capsys, "too softly")
    assert_check_fails(check, reads_values, capsys, "changing only the *values*", "rows of W_K for the value")
    assert_check_fails(check, hands_over_keys, capsys, "W_V hands over the *key* part")
    assert_check_fails(check, negative, capsys, "*smallest* weight", "negative scale")
    assert_check_fails(check, whole_slot, capsys, "W_V has shape (32, 32)", "(32, 16)")
    assert_check_fails(check, no_query, capsys, "every slot gets the same weight")
    assert_check_fails(check, mixed_widths, capsys, "W_Q has shape (32, 16) but W_K has (32, 32)")
    assert_check_fails(check, integers, capsys, "dtype torch.int64", "float32")
    assert_check_fails(check, transposed, capsys, "W_Q has shape (16, 32)", "one row per input feature")
    assert_check_fails(check, overflowing, capsys, "NaN or infinity")
    assert_check_fails(check, lambda nk, nv: None, capsys, "returned None", "return W_Q, W_K, W_V")
    assert_check_fails(check, lambda nk, nv: _key_reader(nk, nv)[:2], capsys, "tuple of length 2", "three matrices")
    assert_check_fails(check, lambda nk, nv: [W.numpy() for W in _key_reader(nk, nv)], capsys, "W_Q is a ndarray")


# ----- every exercise: stubs, exceptions, hints, speed -----------------------------------
EXERCISES = [
    (lesson03.soft_lookup, "soft_lookup", "def f(queries, keys, values, temperature=1.0):"),
    (lesson03.split_qkv, "split_qkv", "def f(x, W_qkv, d_k):"),
    (lesson03.recall_weights, "recall_weights", "def f(num_keys, num_values):"),
]


@pytest.mark.parametrize("exercise, function, signature", EXERCISES)
def test_checkers_report_exceptions_and_unsolved_stubs(exercise, function, signature, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise {exercise.number} ({function}): replace this line with your solution")

    assert_check_fails(exercise, stub, capsys, "not attempted")
    assert_check_fails(exercise, lambda *args, **kwargs: [][1], capsys, "raised an exception", "IndexError")


@pytest.mark.parametrize("exercise, function, signature", EXERCISES)
def test_hints_build_up_and_the_last_shows_a_key_line_not_the_whole_solution(exercise, function, signature, capsys):
    assert_hints_build_up(exercise, capsys)
    assert not gives_whole_solution(exercise.hints[-1], NOTEBOOK, function)
    assert_last_hint_alone_fails(exercise, signature, capsys)  # the key line alone is not an answer


@pytest.mark.parametrize("exercise, function, signature", EXERCISES)
def test_checks_are_fast_and_leave_the_random_stream_alone(exercise, function, signature, solutions, capsys):
    assert_check_is_quick_and_leaves_the_random_stream_alone(exercise, solutions[function], capsys)
