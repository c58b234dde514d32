"""attnlib.fast_attention: online softmax and tiled attention equal the reference; memory grows like L·tile.

Also attnlib.measure: the memory watch counts what a computation's tensors take, and the timers compare.
"""

import math

import pytest
import torch

import attnlib
from attnlib.fast_attention import online_softmax, online_softmax_stats, tiled_attention
from attnlib.measure import compare, memory_used, seconds


def qkv(*shape, d_v=None, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    *lead, lq, lk, d = shape
    q = torch.randn(*lead, lq, d, generator=g).to(dtype)
    k = torch.randn(*lead, lk, d, generator=g).to(dtype)
    v = torch.randn(*lead, lk, d_v or d, generator=g).to(dtype)
    return q, k, v


# ----- online softmax -------------------------------------------------------------------------
@pytest.mark.parametrize("tile", [1, 3, 16, 64, 1000])
def test_online_softmax_equals_softmax_for_any_tile(tile):
    scores = torch.randn(4, 5, 37, generator=torch.Generator().manual_seed(1)) * 5
    torch.testing.assert_close(online_softmax(scores, tile), scores.softmax(dim=-1))
    m, l = online_softmax_stats(scores, tile)
    torch.testing.assert_close(m, scores.amax(dim=-1, keepdim=True))
    torch.testing.assert_close(l, torch.exp(scores - m).sum(dim=-1, keepdim=True))


def test_online_softmax_survives_huge_scores_and_empty_rows():
    scores = torch.tensor([[1000.0, 999.0, -1000.0, 1001.0], [-math.inf] * 4])
    probabilities = online_softmax(scores, 2)
    torch.testing.assert_close(probabilities[0], scores[0].softmax(-1))  # no overflow: the max is subtracted
    assert torch.equal(probabilities[1], torch.zeros(4))  # a row that may see nothing: zeros, not NaN
    m, l = online_softmax_stats(scores, 2)
    assert m[1].item() == -math.inf and l[1].item() == 0.0


def test_online_softmax_errors():
    with pytest.raises(TypeError, match="scores must be a floating-point tensor"):
        online_softmax(torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="tile_size must be an int >= 1"):
        online_softmax(torch.ones(3), 0)
    with pytest.raises(TypeError, match="scores must be a torch.Tensor"):
        online_softmax_stats([1.0, 2.0])


# ----- tiled attention ------------------------------------------------------------------------
@pytest.mark.parametrize("tile", [1, 7, 16, 50, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_tiled_attention_equals_the_reference(tile, causal):
    q, k, v = qkv(2, 3, 50, 50, 8, d_v=5)
    expected = attnlib.scaled_dot_product_attention(q, k, v, causal=causal)
    torch.testing.assert_close(tiled_attention(q, k, v, causal=causal, tile_size=tile), expected)
    torch.testing.assert_close(expected, torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal))


@pytest.mark.parametrize("lq, lk", [(5, 40), (40, 5), (33, 33)])
def test_tiled_attention_with_different_lengths_and_masks(lq, lk):
    q, k, v = qkv(2, 2, lq, lk, 4, seed=2)
    g = torch.Generator().manual_seed(3)
    per_query = torch.rand(2, 1, lq, lk, generator=g) > 0.4  # (B, 1, Lq, Lk): some rows all False
    per_query[0, 0, 0] = False
    padding = (torch.arange(lk)[None, :] < torch.tensor([lk, max(1, lk // 3)])[:, None])[:, None, None, :]  # (B,1,1,Lk)
    for mask in (per_query, padding, per_query[0, 0]):
        for causal in (False, True):
            expected = attnlib.scaled_dot_product_attention(q, k, v, mask, causal=causal)
            got = tiled_attention(q, k, v, mask, causal=causal, tile_size=8)
            torch.testing.assert_close(got, expected)
            assert torch.isfinite(got).all()


def test_a_query_that_sees_nothing_gets_zeros_and_minus_inf_logsumexp():
    q, k, v = qkv(1, 4, 6, 3)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2] = False
    out, lse = tiled_attention(q, k, v, mask, tile_size=4, return_logsumexp=True)
    assert torch.equal(out[0, 2], torch.zeros(3)) and lse[0, 2].item() == -math.inf
    scores = (q @ k.transpose(-2, -1) / math.sqrt(3)).masked_fill(~mask, -math.inf)  # (1, 4, 6)
    keep = torch.tensor([0, 1, 3])
    torch.testing.assert_close(lse[0, keep], scores.logsumexp(-1)[0, keep])


def test_logsumexp_equals_the_scores_and_custom_scale():
    q, k, v = qkv(2, 9, 11, 4, seed=5)
    out, lse = tiled_attention(q, k, v, scale=0.3, tile_size=4, return_logsumexp=True)
    torch.testing.assert_close(out, attnlib.scaled_dot_product_attention(q, k, v, scale=0.3))
    torch.testing.assert_close(lse, (0.3 * q @ k.transpose(-2, -1)).logsumexp(-1))


def test_half_precision_is_accumulated_in_float32():
    q, k, v = qkv(1, 2, 64, 64, 16, seed=6)
    got = tiled_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True, tile_size=16)
    assert got.dtype == torch.bfloat16
    expected = attnlib.scaled_dot_product_attention(q, k, v, causal=True)
    torch.testing.assert_close(got.float(), expected, atol=3e-2, rtol=3e-2)


def test_broadcast_batch_dimensions():
    g = torch.Generator().manual_seed(7)
    q, k, v = torch.randn(2, 3, 10, 4, generator=g), torch.randn(1, 3, 12, 4, generator=g), torch.randn(3, 12, 4, generator=g)
    torch.testing.assert_close(tiled_attention(q, k, v, tile_size=5), attnlib.scaled_dot_product_attention(q, k, v))


def test_gradients_flow_and_equal_the_reference():
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 12, 12, 4, seed=8))
    tiled_attention(q, k, v, causal=True, tile_size=5).square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    attnlib.scaled_dot_product_attention(q, k, v, causal=True).square().sum().backward()
    for got, t in zip(grads, (q, k, v)):
        torch.testing.assert_close(got, t.grad)


def test_tiled_attention_errors():
    q, k, v = qkv(1, 4, 4, 2)
    with pytest.raises(ValueError, match="tile_size must be an int >= 1"):
        tiled_attention(q, k, v, tile_size=0)
    with pytest.raises(ValueError, match="must share d_k"):
        tiled_attention(q, k[..., :1], v)
    with pytest.raises(TypeError, match="mask must be a boolean tensor"):
        tiled_attention(q, k, v, torch.ones(4, 4))
    with pytest.raises(ValueError, match="cannot be broadcast"):
        tiled_attention(q, k, v, torch.ones(3, 4, dtype=torch.bool))


# ----- memory ---------------------------------------------------------------------------------
def test_memory_watch_counts_new_tensors_not_views_or_inputs():
    x = torch.randn(1000)  # 4000 bytes, made before the watch: not counted

    def work():
        y = x * 2  # 4000 new bytes
        z = y.view(10, 100).t()  # a view: nothing new
        w = torch.cat([y, y])  # 8000 new bytes, while y lives: 12000 at once
        del w
        return (z + 1).sum()  # 4000 more (y alive, w freed): peak stays 12000

    used = memory_used(work)
    assert used.largest_bytes == 8000
    assert used.peak_bytes == 12000
    assert "cat" in used.operations and "view" in used.operations


def test_naive_attention_memory_grows_like_l_squared_and_tiled_like_l():
    peaks = {}
    with torch.no_grad():
        for length in (64, 128, 256):
            q, k, v = qkv(1, 2, length, length, 8)
            naive = memory_used(lambda: attnlib.scaled_dot_product_attention(q, k, v, return_weights=True))
            tiled = memory_used(lambda: tiled_attention(q, k, v, tile_size=16))
            peaks[length] = naive, tiled
            assert naive.largest_bytes >= 2 * length * length * 4  # the (B, H, L, L) weights in float32
            assert tiled.largest_bytes <= max(2 * length * 16 * 4, 2 * length * 8 * 4)  # a (B, H, L, tile) block
    assert peaks[256][0].peak_bytes / peaks[128][0].peak_bytes > 3.5  # ×2 in L: ×4 in bytes
    assert peaks[256][1].peak_bytes / peaks[128][1].peak_bytes < 2.5  # ×2 in L: ×2 in bytes


def test_fused_kernel_is_one_operation_on_cpu():
    q, k, v = qkv(1, 2, 32, 32, 8)
    with torch.no_grad():
        used = memory_used(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert len(used.operations) == 1 and "scaled_dot_product" in used.operations[0]
    assert used.largest_bytes < 32 * 32 * 2 * 4  # no L × L tensor


def test_timers():
    calls = []
    assert seconds(lambda: calls.append(1), repeats=3, warmup=2) >= 0 and len(calls) == 5
    x = torch.randn(200, 200)
    result = compare(lambda: x @ x @ x @ x, lambda: x + 1, repeats=3)
    assert result.ratio > 1 and result.seconds_a > result.seconds_b
    assert seconds(lambda: x @ x, repeats=2, clock="cpu") > 0
    with pytest.raises(ValueError, match="clock must be 'wall' or 'cpu'"):
        seconds(lambda: None, clock="gpu")
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        seconds(lambda: None, repeats=0)
    with pytest.raises(TypeError, match="fn must be a function"):
        memory_used(3)
