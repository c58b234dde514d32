"""Lesson 11: its derivations equal attnlib (KV cache step, grouped-query attention, online softmax, tiled
attention), and its checkers judge fairly."""

import math

import pytest
import torch

import attnlib
from attnlib import fast_attention
from attnlib.exercises import lesson11
from attnlib.multi_head import merge_heads, split_heads
from tests.notebook_tools import (assert_check_fails, assert_check_passes, exercise_solutions, gives_whole_solution,
                                  load_derivations)

NOTEBOOK = "11_fast_attention.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


# ----- derivations ---------------------------------------------------------------------------
def test_derivation_cells_define_the_four_ideas(derived):
    for name in ("attend_with_cache", "grouped_query_attention", "online_softmax", "tiled_attention"):
        assert callable(derived.get(name)), name
    assert "merge_attention" not in derived and "pool_kv_heads" not in derived  # the learner's exercises


@pytest.mark.parametrize("prompt", [1, 4, 9])
def test_cached_steps_equal_one_causal_pass_and_attnlibs_cache(derived, prompt):
    torch.manual_seed(prompt)
    layer = attnlib.MultiHeadAttention(12, 3).eval()
    with torch.no_grad():
        layer.in_proj_bias.normal_()
    x = torch.randn(2, 9, 12)
    empty = torch.zeros(2, 3, 0, 4)
    with torch.no_grad():
        out, keys, values = derived["attend_with_cache"](layer, x[:, :prompt], empty, empty)
        pieces = [out]
        for t in range(prompt, 9):
            out, keys, values = derived["attend_with_cache"](layer, x[:, t:t + 1], keys, values)
            pieces.append(out)
        torch.testing.assert_close(torch.cat(pieces, dim=1), layer(x, causal=True))
        cache = attnlib.KVCache(9)
        layer(x, causal=True, cache=cache)
        torch.testing.assert_close(cache.keys, keys)
        torch.testing.assert_close(cache.values, values)
        two_at_once = derived["attend_with_cache"](layer, x[:, :prompt], empty, empty)  # a chunk of several new
        chunk, _, _ = derived["attend_with_cache"](layer, x[:, prompt:], two_at_once[1], two_at_once[2])
        torch.testing.assert_close(chunk, layer(x, causal=True)[:, prompt:])  # tokens after a prompt: causal


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("causal", [False, True])
def test_grouped_query_derivation_equals_attnlib(derived, kv_heads, causal):
    torch.manual_seed(kv_heads)
    layer = attnlib.MultiHeadAttention(16, 4, num_kv_heads=kv_heads).eval()
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        q, k, v = layer.project(x, x, x)
        heads = derived["grouped_query_attention"](split_heads(q, 4), split_heads(k, kv_heads), split_heads(v, kv_heads),
                                                   causal=causal)
        torch.testing.assert_close(layer.out_proj(merge_heads(heads)), layer(x, causal=causal))


@pytest.mark.parametrize("tile", [1, 5, 32, 64])
def test_online_softmax_derivation_equals_softmax_and_attnlib(derived, tile):
    scores = 20 * torch.randn(3, 4, 50, generator=torch.Generator().manual_seed(tile))
    torch.testing.assert_close(derived["online_softmax"](scores, tile), scores.softmax(-1))
    torch.testing.assert_close(derived["online_softmax"](scores, tile), fast_attention.online_softmax(scores, tile))


def test_derived_tiled_attention_equals_attnlib_with_masks(derived):
    g = torch.Generator().manual_seed(5)
    q, k, v = torch.randn(2, 2, 30, 8, generator=g), torch.randn(2, 2, 45, 8, generator=g), torch.randn(2, 2, 45, 6,
                                                                                                        generator=g)
    mask = torch.rand(2, 2, 30, 45, generator=g) > 0.4
    mask[1, 0, 3] = False  # a query that sees nothing
    for m in (None, mask):
        for tile in (4, 16, 64):
            ours = derived["tiled_attention"](q, k, v, tile, m)
            torch.testing.assert_close(ours, fast_attention.tiled_attention(q, k, v, m, tile_size=tile))
            torch.testing.assert_close(ours, attnlib.scaled_dot_product_attention(q, k, v, m))
    assert torch.equal(derived["tiled_attention"](q, k, v, 8, mask)[1, 0, 3], torch.zeros(6))


# ----- 11.1 KV cache bytes -------------------------------------------------------------------
def test_11_1_solution_and_an_equivalent_answer_pass(solutions, capsys):
    assert_check_passes(lesson11.kv_cache_bytes, solutions["kv_cache_bytes"], capsys)
    assert_check_passes(lesson11.kv_cache_bytes, lambda L, B, T, H, Hkv, d, b: float(2 * L * B * T * Hkv * d * b), capsys)


@pytest.mark.parametrize("wrong, fragments", [
    (lambda L, B, T, H, Hkv, d, b: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda L, B, T, H, Hkv, d, b: None, ["is None"]),
    (lambda L, B, T, H, Hkv, d, b: L * B * T * Hkv * d * b, ["keys only"]),
    (lambda L, B, T, H, Hkv, d, b: 16 * L * B * T * Hkv * d * b, ["counts bits"]),
    (lambda L, B, T, H, Hkv, d, b: 2 * B * T * Hkv * d * b, ["forgets the layers"]),
    (lambda L, B, T, H, Hkv, d, b: 2 * L * T * Hkv * d * b, ["forgets the batch"]),
    (lambda L, B, T, H, Hkv, d, b: 2 * L * B * T * H * d * b, ["uses num_heads"]),
    (lambda L, B, T, H, Hkv, d, b: 2 * L * B * T * Hkv * d, ["counts numbers, not bytes"]),
    (lambda L, B, T, H, Hkv, d, b: 2 * L * B * T * d * b, ["forgets the key/value heads"]),
    (lambda L, B, T, H, Hkv, d, b: 2 * L * B * T * Hkv * d * b + 1, ["off by a factor"]),
    (lambda L, B, T, H, Hkv, d, b: "lots", ["a str"]),
])
def test_11_1_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson11.kv_cache_bytes, wrong, capsys, *fragments)


# ----- 11.2 pooling KV heads -----------------------------------------------------------------
def _pool_with(group_rows):
    """A pool_kv_heads whose key/value rows are grouped by ``group_rows(rows, num_kv_heads, group, d_head)``."""
    def pool_kv_heads(mha, num_kv_heads, pool_queries=False, keep_bias=True, copy_out=True):
        d, H, d_head = mha.d_model, mha.num_heads, mha.d_head
        group = H // num_kv_heads
        new = attnlib.MultiHeadAttention(d, H, num_kv_heads=num_kv_heads, bias=mha.in_proj_bias is not None)
        pool = lambda rows: group_rows(rows, num_kv_heads, group, d_head)  # noqa: E731
        with torch.no_grad():
            w = mha.in_proj_weight
            new.in_proj_weight.copy_(torch.cat([w[:d], pool(w[d:2 * d]), pool(w[2 * d:])]))
            if mha.in_proj_bias is not None and keep_bias:
                b = mha.in_proj_bias[:, None]
                new.in_proj_bias.copy_(torch.cat([b[:d], pool(b[d:2 * d]), pool(b[2 * d:])])[:, 0])
            if copy_out:
                new.out_proj.load_state_dict(mha.out_proj.state_dict())
        return new
    return pool_kv_heads


_mean = _pool_with(lambda r, n, g, dh: r.reshape(n, g, dh, -1).mean(1).reshape(n * dh, -1))


def test_11_2_solution_and_an_equivalent_answer_pass(solutions, capsys):
    assert_check_passes(lesson11.pool_kv_heads, solutions["pool_kv_heads"], capsys)
    assert_check_passes(lesson11.pool_kv_heads, _mean, capsys)
    by_loop = _pool_with(lambda r, n, g, dh: torch.cat([
        torch.stack([r[(h * g + i) * dh:(h * g + i + 1) * dh] for i in range(g)]).mean(0) for h in range(n)]))
    assert_check_passes(lesson11.pool_kv_heads, by_loop, capsys)


def _in_place(mha, n):
    with torch.no_grad():
        mha.out_proj.weight.mul_(2)
    return _mean(mha, n)


@pytest.mark.parametrize("wrong, fragments", [
    (lambda m, n: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda m, n: None, ["returned a NoneType"]),
    (lambda m, n: m, ["num_kv_heads="]),
    (_pool_with(lambda r, n, g, dh: r.reshape(g, n, dh, -1).mean(0).reshape(n * dh, -1)), ["h + num_kv_heads"]),
    (_pool_with(lambda r, n, g, dh: r.reshape(n, g, dh, -1)[:, 0].reshape(n * dh, -1)), ["keeps the first head"]),
    (_pool_with(lambda r, n, g, dh: r.reshape(n, g, dh, -1).sum(1).reshape(n * dh, -1)), ["sums the heads"]),
    (lambda m, n: _mean(m, n, keep_bias=False), ["biases are not"]),
    (lambda m, n: _mean(m, n, copy_out=False), ["output projection"]),
    (_in_place, ["changed the layer it was given"]),
    (lambda m, n: attnlib.MultiHeadAttention(m.d_model, m.num_heads, num_kv_heads=n, bias=m.in_proj_bias is not None),
     ["keeps the first head", "query projection", "wrong values", "biases"][1:2]),
])
def test_11_2_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson11.pool_kv_heads, wrong, capsys, *fragments)


# ----- 11.3 merging attention ----------------------------------------------------------------
def _merge(o1, l1, o2, l2):
    lse = torch.logaddexp(l1, l2)
    shift = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return torch.exp(l1 - shift)[..., None] * o1 + torch.exp(l2 - shift)[..., None] * o2, lse


def test_11_3_solution_and_an_equivalent_answer_pass(solutions, capsys):
    assert_check_passes(lesson11.merge_attention, solutions["merge_attention"], capsys)

    def by_maximum(o1, l1, o2, l2):  # subtract the larger lse instead of the merged one
        m = torch.maximum(l1, l2)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
        total = w1 + w2
        out = torch.where(total[..., None] > 0, (w1[..., None] * o1 + w2[..., None] * o2) / total.clamp_min(1e-30)[..., None],
                          torch.zeros_like(o1))
        return out, m + torch.log(total)

    assert_check_passes(lesson11.merge_attention, by_maximum, capsys)


def _naive_exp(o1, l1, o2, l2):
    e1, e2 = torch.exp(l1)[..., None], torch.exp(l2)[..., None]
    return (e1 * o1 + e2 * o2) / (e1 + e2), torch.logaddexp(l1, l2)


@pytest.mark.parametrize("wrong, fragments", [
    (lambda o1, l1, o2, l2: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda o1, l1, o2, l2: None, ["is None"]),
    (lambda o1, l1, o2, l2: _merge(o1, l1, o2, l2)[0], ["returned one tensor", "(out, lse)"]),
    (lambda o1, l1, o2, l2: ((o1 + o2) / 2, torch.logaddexp(l1, l2)), ["plain average"]),
    (lambda o1, l1, o2, l2: _merge(o2, l1, o1, l2), ["swapped"]),
    (_naive_exp, ["overflows for large scores"]),
    (lambda o1, l1, o2, l2: (torch.exp(l1 - torch.logaddexp(l1, l2))[..., None] * o1
                             + torch.exp(l2 - torch.logaddexp(l1, l2))[..., None] * o2, torch.logaddexp(l1, l2)),
     ["sees no key", "NaN"]),
    (lambda o1, l1, o2, l2: (_merge(o1, l1, o2, l2)[0], torch.maximum(l1, l2)), ["larger of the two"]),
    (lambda o1, l1, o2, l2: (_merge(o1, l1, o2, l2)[0], l1 + l2), ["lse_1 + lse_2"]),
    (lambda o1, l1, o2, l2: (_merge(o1, l1, o2, l2)[0] * 1.1, _merge(o1, l1, o2, l2)[1]), ["wrong values"]),
])
def test_11_3_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson11.merge_attention, wrong, capsys, *fragments)


def test_merge_of_tiled_halves_equals_attention_over_all_keys():
    """The exercise's premise: tiled_attention's log-sum-exp lets two halves be merged exactly."""
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 5, 4, generator=g), torch.randn(3, 11, 4, generator=g), torch.randn(3, 11, 2, generator=g)
    parts = [fast_attention.tiled_attention(q, k[:, s], v[:, s], return_logsumexp=True) for s in (slice(0, 4), slice(4, 11))]
    out, lse = _merge(*parts[0], *parts[1])
    whole, whole_lse = fast_attention.tiled_attention(q, k, v, return_logsumexp=True)
    torch.testing.assert_close(out, whole)
    torch.testing.assert_close(lse, whole_lse)
    torch.testing.assert_close(lse, (q @ k.transpose(-2, -1) / math.sqrt(4)).logsumexp(-1))


# ----- hints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("exercise, function", [(lesson11.kv_cache_bytes, "kv_cache_bytes"),
                                                (lesson11.pool_kv_heads, "pool_kv_heads"),
                                                (lesson11.merge_attention, "merge_attention")])
def test_hints_build_up_and_never_give_the_whole_solution(exercise, function):
    assert 2 <= len(exercise.hints) <= 4
    for hint in exercise.hints:
        assert not gives_whole_solution(hint, NOTEBOOK, function)
