"""Lesson 05: its derivations equal attnlib's layers, and its exercise checkers judge fairly."""

import math

import numpy as np
import pytest
import torch

import attnlib
from attnlib.exercises import lesson05
from tests.notebook_tools import (
    assert_check_fails,
    assert_check_is_quick_and_leaves_the_random_stream_alone,
    assert_check_passes,
    assert_hints_build_up,
    assert_last_hint_alone_fails,
    exercise_solutions,
    load_derivations,
)

NOTEBOOK = "05_self_attention.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


# ----- derivations ---------------------------------------------------------------------------
def test_derivation_cells_define_self_attention(derived):
    assert callable(derived.get("self_attention")) and callable(derived.get("causal_self_attention"))


@pytest.mark.parametrize("d_model, d_k, d_v", [(16, 16, 16), (12, 8, 5)])
def test_self_attention_equals_qkv_projection_attend(derived, d_model, d_k, d_v):
    torch.manual_seed(0)
    projection = attnlib.QKVProjection(d_model, d_k, d_v)
    W_Q, W_K, W_V = (layer.weight.detach().T for layer in (projection.w_q, projection.w_k, projection.w_v))
    x = torch.randn(3, 7, d_model)  # (B, L, d_model)
    padding = (torch.arange(7)[None, :] < torch.tensor([7, 4, 1])[:, None])[:, None, :]  # (B, 1, L)
    with torch.no_grad():
        for mask in (None, padding):
            ours = derived["self_attention"](x, W_Q, W_K, W_V, mask)
            theirs = projection.attend(x, mask=mask, return_weights=True)
            for a, b in zip(ours, theirs):
                torch.testing.assert_close(a, b)
        output, weights = derived["causal_self_attention"](x, W_Q, W_K, W_V)
        expected, expected_weights = projection.attend(x, causal=True, return_weights=True)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(weights, expected_weights)
    assert (weights.triu(diagonal=1) == 0).all()


def test_self_attention_is_a_one_head_multi_head_attention_with_identity_output(derived):
    torch.manual_seed(1)
    d = 8
    mha = attnlib.MultiHeadAttention(d, 1, bias=False)
    with torch.no_grad():
        mha.out_proj.weight.copy_(torch.eye(d))
    W_Q, W_K, W_V = (w.T for w in mha.in_proj_weight.detach().chunk(3))  # (d, d) each
    x = torch.randn(2, 5, d)
    with torch.no_grad():
        output, weights = derived["self_attention"](x, W_Q, W_K, W_V)
        theirs, their_weights = mha(x, return_weights=True)
        torch.testing.assert_close(output, theirs)
        torch.testing.assert_close(weights, their_weights[:, 0])
        torch.testing.assert_close(derived["causal_self_attention"](x, W_Q, W_K, W_V)[0], mha(x, causal=True))


def test_self_attention_is_permutation_equivariant(derived):
    torch.manual_seed(2)
    x, W = torch.randn(2, 6, 8), [torch.randn(8, 8) for _ in range(3)]
    order = torch.randperm(6)
    output, weights = derived["self_attention"](x, *W)
    shuffled, shuffled_weights = derived["self_attention"](x[:, order], *W)
    torch.testing.assert_close(shuffled, output[:, order])
    torch.testing.assert_close(shuffled_weights, weights[:, order][:, :, order])


# ----- 5.1 previous-token head ---------------------------------------------------------------
def test_5_1_solution_passes(solutions, capsys):
    assert_check_passes(lesson05.previous_token_projections, solutions["previous_token_projections"], capsys)


def test_5_1_an_equivalent_answer_passes(capsys):
    def with_wide_keys(max_len, d_content):
        """d_k = max_len + 3, the scale on W_K instead of W_Q, the shift built with roll."""
        d_model, d_k = max_len + d_content, max_len + 3
        W_Q = torch.zeros(d_model, d_k)
        W_Q[1:max_len, : max_len - 1] = torch.eye(max_len - 1)
        W_K = torch.zeros(d_model, d_k)
        W_K[:max_len, :max_len] = 30 * math.sqrt(d_k) * torch.eye(max_len)
        return W_Q, W_K

    assert_check_passes(lesson05.previous_token_projections, with_wide_keys, capsys)


def _shift_projections(max_len, d_content, *, shift=-1, scale=20.0, content=0.0):
    """Query i matches key i + shift; ``content`` puts an identity on the content features too."""
    d_model = max_len + d_content
    W_K = torch.zeros(d_model, d_model)
    W_K[:max_len, :max_len] = torch.eye(max_len)
    W_K[max_len:, max_len:] = content * torch.eye(d_content)
    W_Q = torch.zeros(d_model, d_model)
    for i in range(max_len):
        if 0 <= i + shift < max_len:
            W_Q[i, i + shift] = scale * math.sqrt(d_model)
    W_Q[max_len:, max_len:] = content * 50 * torch.eye(d_content)
    return W_Q, W_K


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda m, c: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda m, c: None, ["returned None", "return W_Q, W_K"]),
        (lambda m, c: _shift_projections(m, c)[0], ["returned a Tensor", "pair `(W_Q, W_K)`"]),
        (lambda m, c: (torch.eye(m + c), torch.eye(m + c)), ["attend to themselves", "i - 1"]),
        (lambda m, c: _shift_projections(m, c, shift=0), ["attend to themselves"]),
        (lambda m, c: _shift_projections(m, c, shift=1), ["*next* token", "wrong way"]),
        (lambda m, c: _shift_projections(m, c, scale=1 / math.sqrt(m + c)), ["too softly", "√d_k", "scale"]),
        (lambda m, c: _shift_projections(m, c, content=1.0), ["content features", "zero"]),
        (lambda m, c: (torch.zeros(m, m), torch.zeros(m, m)), ["shape", "d_model = max_len + d_content"]),
        (lambda m, c: (torch.zeros(m + c, 3), torch.zeros(m + c, 4)), ["same width d_k"]),
        (lambda m, c: tuple(w.double() for w in _shift_projections(m, c)), ["torch.float64"]),
        (lambda m, c: tuple(w * 1e20 for w in _shift_projections(m, c)), ["NaN", "overflow"]),
        (lambda m, c: tuple(w * float("inf") for w in _shift_projections(m, c)), ["NaN or infinity"]),
        (lambda m, c: _shift_projections(6, 5), ["shape"]),  # hard-coded sizes
        (lambda m, c: np.zeros((m + c, m)), ["returned a ndarray", "pair"]),
    ],
)
def test_5_1_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson05.previous_token_projections, wrong, capsys, *fragments)


# ----- 5.2 window mask -----------------------------------------------------------------------
def test_5_2_solution_and_an_equivalent_answer_pass(solutions, capsys):
    assert_check_passes(lesson05.window_mask, solutions["window_mask"], capsys)

    def by_tril(size, window):
        ones = torch.ones(size, size, dtype=torch.bool)
        return ones.tril() & ~ones.tril(-window - 1)

    assert_check_passes(lesson05.window_mask, by_tril, capsys)


def _band(low, high):
    def mask(size, window):
        offset = torch.arange(size)[:, None] - torch.arange(size)[None, :]
        return (offset >= low(window)) & (offset <= high(window))
    return mask


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda s, w: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda s, w: None, ["is None"]),
        (lambda s, w: ~_band(lambda w: 0, lambda w: w)(s, w), ["inverted"]),
        (_band(lambda w: -w, lambda w: w), ["next tokens too", "j <= i"]),
        (_band(lambda w: 0, lambda w: w - 1), ["only window - 1 previous tokens"]),
        (_band(lambda w: 0, lambda w: w + 1), ["window + 1 previous tokens"]),
        (_band(lambda w: 1, lambda w: w), ["hides the token itself"]),
        (lambda s, w: torch.ones(s, s, dtype=torch.bool).tril(), ["plain causal mask"]),
        (_band(lambda w: -w, lambda w: 0), ["looks forward"]),
        (lambda s, w: _band(lambda w: 0, lambda w: w)(s, w).float(), ["dtype torch.float32", "boolean"]),
        (lambda s, w: _band(lambda w: 0, lambda w: w)(s, w)[None], ["shape (1, 7, 7)"]),
        (lambda s, w: _band(lambda w: 0, lambda w: 3)(s, 3), ["window_mask(size=5, window=0) is wrong"]),
        (lambda s, w: _band(lambda w: 0, lambda w: w)(7, w), ["window_mask(size=5, window=0)"]),  # size fixed
        (lambda s, w: _band(lambda w: 0, lambda w: w)(s, w).numpy(), ["numpy array"]),
        (lambda s, w: torch.rand(s, s) > 2, ["wrong at"]),
    ],
)
def test_5_2_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson05.window_mask, wrong, capsys, *fragments)


# ----- 5.3 longest sequence ------------------------------------------------------------------
def test_5_3_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson05.longest_sequence, solutions["longest_sequence"], capsys)
    assert_check_passes(lesson05.longest_sequence,
                        lambda m, b, h, s: int(math.floor(math.sqrt(m / (b * h * s)) + 1e-9)), capsys)
    assert_check_passes(lesson05.longest_sequence,
                        lambda m, b, h, s: np.int64(math.isqrt(m // (b * h * s))), capsys)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda m, b, h, s: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda m, b, h, s: None, ["is None"]),
        (lambda m, b, h, s: math.sqrt(m / (b * h * s)), ["not an int", "round down"]),
        (lambda m, b, h, s: math.isqrt(m // (h * s)), ["forgets the batch"]),
        (lambda m, b, h, s: math.isqrt(m // (b * s)), ["forgets the heads"]),
        (lambda m, b, h, s: math.isqrt(m // (b * h)), ["forgets the bytes per number"]),
        (lambda m, b, h, s: m // (b * h * s), ["square root"]),
        (lambda m, b, h, s: math.isqrt(m // (b * h * s * 8)), ["bits instead of bytes"]),
        (lambda m, b, h, s: math.ceil(math.sqrt(m / (b * h * s))), ["does not fit", "Round down"]),
        (lambda m, b, h, s: max(0, math.isqrt(m // (b * h * s)) - 1), ["still fit", "largest"]),
        (lambda m, b, h, s: "65536", ["a str; an int was expected"]),
        (lambda m, b, h, s: 1 / 0, ["raised an exception", "ZeroDivisionError"]),
    ],
)
def test_5_3_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson05.longest_sequence, wrong, capsys, *fragments)


# ----- hints -----------------------------------------------------------------------------------
EXERCISES = (lesson05.previous_token_projections, lesson05.window_mask, lesson05.longest_sequence)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_hints_come_in_order_and_the_last_repeats(exercise, capsys):
    assert_hints_build_up(exercise, capsys)


@pytest.mark.parametrize("exercise, signature", [
    (lesson05.previous_token_projections, "def f(max_len, d_content):"),
    (lesson05.window_mask, "def f(size, window):"),
    (lesson05.longest_sequence, "def f(memory_bytes, batch_size, num_heads, bytes_per_number):"),
])
def test_the_last_hint_shows_a_key_line_not_the_whole_solution(exercise, signature, capsys):
    assert_last_hint_alone_fails(exercise, signature, capsys)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_checks_are_fast_and_leave_the_random_stream_alone(exercise, solutions, capsys):
    name = {"5.1": "previous_token_projections", "5.2": "window_mask", "5.3": "longest_sequence"}[exercise.number]
    assert_check_is_quick_and_leaves_the_random_stream_alone(exercise, solutions[name], capsys)
