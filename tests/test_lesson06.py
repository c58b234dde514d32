"""Lesson 06: its derivations equal attnlib.MultiHeadAttention, and its exercise checkers judge fairly."""


import numpy as np
import pytest
import torch

import attnlib
from attnlib.exercises import lesson06
from tests.notebook_tools import (
    assert_check_fails,
    assert_check_is_quick_and_leaves_the_random_stream_alone,
    assert_check_passes,
    assert_hints_build_up,
    assert_last_hint_alone_fails,
    exercise_solutions,
    load_derivations,
)

NOTEBOOK = "06_multi_head_attention.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


# ----- derivations ---------------------------------------------------------------------------
def test_derivation_cells_define_split_heads_and_the_layer(derived):
    assert callable(derived.get("split_heads")) and callable(derived.get("multi_head_attention"))
    assert "merge_heads" not in derived  # the learner writes it (exercise 6.1); the layer uses attnlib's


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
def test_split_heads_equals_attnlib_and_merge_undoes_it(derived, heads):
    x = torch.randn(3, 5, 16)
    ours = derived["split_heads"](x, heads)
    torch.testing.assert_close(ours, attnlib.multi_head.split_heads(x, heads))
    torch.testing.assert_close(attnlib.multi_head.merge_heads(ours), x)


def _layer_and_parts(d_model, heads, seed=0):
    torch.manual_seed(seed)
    mha = attnlib.MultiHeadAttention(d_model, heads).eval()
    with torch.no_grad():  # non-zero biases, so a forgotten bias cannot pass
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha, (mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias)


@pytest.mark.parametrize("d_model, heads", [(16, 4), (12, 3), (8, 1)])
def test_derived_layer_equals_attnlib_multi_head_attention(derived, d_model, heads):
    mha, parts = _layer_and_parts(d_model, heads)
    g = torch.Generator().manual_seed(1)
    x, memory = torch.randn(3, 5, d_model, generator=g), torch.randn(3, 8, d_model, generator=g)
    real = torch.arange(8)[None, :] < torch.tensor([8, 3, 1])[:, None]  # (B, Lk)
    per_head = torch.rand(3, heads, 5, 5, generator=g) > 0.5  # (B, H, Lq, Lk)
    per_head[..., 0] = True
    cases = [
        ((x, x, x), {}),
        ((x, x, x), {"causal": True}),
        ((x, memory, memory), {"mask": real[:, None, None, :]}),
        ((x, memory, torch.randn(3, 8, d_model, generator=g)), {}),
        ((x, x, x), {"mask": per_head}),
        ((x, x, x), {"mask": per_head, "causal": True}),
    ]
    with torch.no_grad():
        for args, kwargs in cases:
            output, weights = derived["multi_head_attention"](*args, *parts, heads, **kwargs)
            expected, expected_weights = mha(*args, return_weights=True, **kwargs)
            torch.testing.assert_close(output, expected)
            torch.testing.assert_close(weights, expected_weights)
            torch.testing.assert_close(output, mha(*args, **kwargs))  # the fused path too


def test_derived_layer_equals_torch_after_copying_weights(derived):
    torch.manual_seed(2)
    theirs = torch.nn.MultiheadAttention(12, 3, batch_first=True).eval()
    parts = (theirs.in_proj_weight, theirs.in_proj_bias, theirs.out_proj.weight, theirs.out_proj.bias)
    x = torch.randn(2, 6, 12)
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    with torch.no_grad():
        output, weights = derived["multi_head_attention"](x, x, x, *parts, 3, causal=True)
        expected, expected_weights = theirs(x, x, x, attn_mask=future, average_attn_weights=False)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(weights, expected_weights)


# ----- 6.1 merge heads -----------------------------------------------------------------------
def test_6_1_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson06.merge_heads, solutions["merge_heads"], capsys)
    assert_check_passes(lesson06.merge_heads, lambda x: x.permute(0, 2, 1, 3).flatten(2), capsys)
    assert_check_passes(lesson06.merge_heads, lambda x: torch.cat(x.unbind(1), dim=-1), capsys)
    assert_check_passes(lesson06.merge_heads, attnlib.multi_head.merge_heads, capsys)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda x: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda x: None, ["is None"]),
        (lambda x: x.reshape(x.shape[0], x.shape[2], -1), ["without first moving the head axis", "transpose(1, 2)"]),
        (lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1), ["interleaves", "(B, L, H, d_head)"]),
        (lambda x: x.flip(1).transpose(1, 2).reshape(x.shape[0], x.shape[2], -1), ["reverse order"]),
        (lambda x: x.sum(1), ["(2, 4, 5)", "added or averaged", "side by side"]),
        (lambda x: x.mean(1), ["added or averaged"]),
        (lambda x: x.transpose(1, 2), ["(2, 4, 3, 5)", "flatten the last two"]),
        (lambda x: x.transpose(1, 2).reshape(x.shape[0], -1, x.shape[2]), ["(2, 15, 4)", "one row of features"]),
        (lambda x: x.transpose(1, 2).view(x.shape[0], x.shape[2], -1), ["raised an exception", "Tip:", "reshape"]),
        (lambda x: x.transpose(1, 2).reshape(2, 4, 15), ["raised an exception"]),  # sizes hard-coded
        (lambda x: x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1).double(), ["dtype torch.float64"]),
        (lambda x: x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1).numpy(), ["numpy array"]),
        (lambda x: x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1) * 2, ["wrong values"]),
    ],
)
def test_6_1_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson06.merge_heads, wrong, capsys, *fragments)


# ----- 6.2 parameter count -------------------------------------------------------------------
def test_6_2_solution_and_an_equivalent_answer_pass(solutions, capsys):
    assert_check_passes(lesson06.mha_parameter_count, solutions["mha_parameter_count"], capsys)
    assert_check_passes(lesson06.mha_parameter_count,
                        lambda e, h, k, v, b: float(e * (2 * e + k + v) + 4 * e * b), capsys)  # 1.0 * int is fine
    assert_check_passes(lesson06.mha_parameter_count,
                        lambda e, h, k, v, b: np.int64(e * (2 * e + k + v) + 4 * e * b), capsys)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda e, h, k, v, b: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda e, h, k, v, b: None, ["is None"]),
        (lambda e, h, k, v, b: 4 * e * e + 4 * e * b, ["treats the keys' and values' inputs as embed_dim wide"]),
        (lambda e, h, k, v, b: e * e + e * k + e * v + 4 * e * b, ["forgets the output projection"]),
        (lambda e, h, k, v, b: e * e + k * k + v * v + e * e + 4 * e * b, ["makes W_K and W_V square"]),
        (lambda e, h, k, v, b: 2 * e * e + e * k + e * v, ["forgets the biases"]),
        (lambda e, h, k, v, b: 2 * e * e + e * k + e * v + (2 * e + k + v) * b, ["input widths"]),
        (lambda e, h, k, v, b: 2 * e * e + e * k + e * v + 3 * e * b, ["output projection's bias"]),
        (lambda e, h, k, v, b: h * (2 * e * e + e * k + e * v) + 4 * e * b, ["multiplies the weights by the number"]),
        (lambda e, h, k, v, b: h * (2 * e * e + e * k + e * v + 4 * e * b), ["multiplies by the number of heads"]),
        (lambda e, h, k, v, b: 2 * e * e + e * k + e * v + 4 * e * b + 1, ["off by +1", "out × in"]),
        (lambda e, h, k, v, b: "1000", ["a str", "int"]),
        (lambda e, h, k, v, b: 12.5, ["a float"]),
    ],
)
def test_6_2_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson06.mha_parameter_count, wrong, capsys, *fragments)


# ----- 6.3 cross-attention FLOPs ---------------------------------------------------------------
def _flops(B, Lq, Lk, d):
    return 4 * B * Lq * d * d + 4 * B * Lk * d * d + 4 * B * Lq * Lk * d


def test_6_3_solution_and_an_equivalent_answer_pass(solutions, capsys):
    assert_check_passes(lesson06.cross_attention_flops, solutions["cross_attention_flops"], capsys)
    assert_check_passes(lesson06.cross_attention_flops,
                        lambda B, Lq, Lk, d, H: 4 * B * d * (d * (Lq + Lk) + Lq * Lk), capsys)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda B, Lq, Lk, d, H: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda B, Lq, Lk, d, H: None, ["is None"]),
        (lambda B, Lq, Lk, d, H: _flops(B, Lq, Lk, d) // 2, ["multiply-adds"]),
        (lambda B, Lq, Lk, d, H: 8 * B * Lq * d * d + 4 * B * Lq * Lq * d, ["self-attention count with L = len_q"]),
        (lambda B, Lq, Lk, d, H: 8 * B * Lk * d * d + 4 * B * Lk * Lk * d, ["self-attention count with L = len_k"]),
        (lambda B, Lq, Lk, d, H: 2 * B * Lq * d * d + 4 * B * Lk * d * d + 4 * B * Lq * Lk * d, ["output projection"]),
        (lambda B, Lq, Lk, d, H: _flops(1, Lq, Lk, d), ["forgets the batch"]),
        (lambda B, Lq, Lk, d, H: H * _flops(B, Lq, Lk, d), ["multiplies everything by the number of heads"]),
        (lambda B, Lq, Lk, d, H: 4 * B * Lq * d * d + 4 * B * Lk * d * d + 4 * H * B * Lq * Lk * d,
         ["attention part by the number of heads", "d_head"]),
        (lambda B, Lq, Lk, d, H: 4 * B * Lq * d * d + 4 * B * Lk * d * d + 2 * B * Lq * Lk * d, ["only one of the two"]),
        (lambda B, Lq, Lk, d, H: _flops(B, Lq, Lk, d) + 7, ["off by +7", "torch's FLOP counter"]),
        (lambda B, Lq, Lk, d, H: [1, 2], ["a list", "int"]),
    ],
)
def test_6_3_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson06.cross_attention_flops, wrong, capsys, *fragments)


# ----- hints and speed -------------------------------------------------------------------------
EXERCISES = (lesson06.merge_heads, lesson06.mha_parameter_count, lesson06.cross_attention_flops)
NAMES = {"6.1": "merge_heads", "6.2": "mha_parameter_count", "6.3": "cross_attention_flops"}


@pytest.mark.parametrize("exercise", EXERCISES)
def test_hints_come_in_order_and_the_last_repeats(exercise, capsys):
    assert_hints_build_up(exercise, capsys)


@pytest.mark.parametrize("exercise, signature", [
    (lesson06.merge_heads, "def f(x):"),
    (lesson06.mha_parameter_count, "def f(embed_dim, num_heads, kdim, vdim, bias):"),
    (lesson06.cross_attention_flops, "def f(batch, len_q, len_k, d_model, num_heads):"),
])
def test_the_last_hint_shows_a_key_line_not_the_whole_solution(exercise, signature, capsys):
    assert_last_hint_alone_fails(exercise, signature, capsys)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_checks_are_fast_and_leave_the_random_stream_alone(exercise, solutions, capsys):
    assert_check_is_quick_and_leaves_the_random_stream_alone(exercise, solutions[NAMES[exercise.number]], capsys)
