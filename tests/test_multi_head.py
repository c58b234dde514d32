"""attnlib.MultiHeadAttention: equal to torch.nn.MultiheadAttention, masks, gradients and errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnlib
from attnlib.multi_head import merge_heads, split_heads

D, H = 16, 4


def pair(bias=True, seed=0):
    """Our layer and torch's, with the same weights (copied through load_state_dict)."""
    torch.manual_seed(seed)
    ours = attnlib.MultiHeadAttention(D, H, bias=bias).eval()
    theirs = nn.MultiheadAttention(D, H, bias=bias, batch_first=True).eval()
    ours.load_state_dict(theirs.state_dict())  # the same parameter names
    return ours, theirs


def inputs(batch=3, lq=5, lk=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    lk = lq if lk is None else lk
    return torch.randn(batch, lq, D, generator=g), torch.randn(batch, lk, D, generator=g)


def torch_masks(mask, batch, lq, lk):
    """attnlib's True = may attend, as torch's attn_mask (True = hidden), per head."""
    full = torch.broadcast_to(mask, (batch, H, lq, lk))
    return (~full).reshape(batch * H, lq, lk)


def test_parameter_names_and_count_match_torch():
    ours, theirs = pair()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert sum(p.numel() for p in ours.parameters()) == 4 * D * D + 4 * D
    assert sum(p.numel() for p in attnlib.MultiHeadAttention(D, H, bias=False).parameters()) == 4 * D * D


@pytest.mark.parametrize("bias", [True, False])
def test_self_attention_equals_torch(bias):
    ours, theirs = pair(bias)
    x, _ = inputs()
    expected, expected_weights = theirs(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(ours(x), expected)
    got, weights = ours(x, return_weights=True)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(weights, expected_weights)  # (B, H, Lq, Lk): one distribution per head


def test_key_padding_mask_equals_torch_in_the_opposite_convention():
    ours, theirs = pair()
    x, _ = inputs(batch=3, lq=6)
    real = torch.arange(6)[None, :] < torch.tensor([6, 4, 2])[:, None]  # (B, Lk), True = real token
    expected, _ = theirs(x, x, x, key_padding_mask=~real)  # torch: True = ignore this key
    got = ours(x, mask=real[:, None, None, :])  # attnlib: (B, 1, 1, Lk), True = may attend
    torch.testing.assert_close(got, expected)


def test_causal_mask_equals_torch():
    ours, theirs = pair()
    x, _ = inputs(lq=7)
    future = torch.ones(7, 7, dtype=torch.bool).triu(1)  # torch: True = hidden
    expected, _ = theirs(x, x, x, attn_mask=future)
    torch.testing.assert_close(ours(x, causal=True), expected)
    torch.testing.assert_close(ours(x, mask=attnlib.causal_mask(7)), expected)
    torch.testing.assert_close(ours(x, causal=True, return_weights=True)[0], expected)


def test_causal_and_padding_combined_equal_torch():
    ours, theirs = pair()
    x, _ = inputs(batch=2, lq=6)
    real = torch.arange(6)[None, :] < torch.tensor([6, 3])[:, None]  # (B, Lk)
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    expected, _ = theirs(x, x, x, attn_mask=future, key_padding_mask=~real)
    got = ours(x, mask=real[:, None, None, :], causal=True)
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1, :3], expected[1, :3])  # real queries (torch's padded ones differ: see below)


def test_cross_attention_with_different_lengths_equals_torch():
    ours, theirs = pair()
    queries, memory = inputs(batch=2, lq=3, lk=7)
    real = torch.arange(7)[None, :] < torch.tensor([7, 5])[:, None]  # (B, Lk)
    expected, expected_weights = theirs(queries, memory, memory, key_padding_mask=~real, average_attn_weights=False)
    got, weights = ours(queries, memory, mask=real[:, None, None, :], return_weights=True)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(weights, expected_weights)
    assert weights.shape == (2, H, 3, 7) and (weights[1, ..., 5:] == 0).all()
    other_values = torch.randn_like(memory)
    torch.testing.assert_close(ours(queries, memory, other_values),
                               theirs(queries, memory, other_values, need_weights=False)[0])


def test_per_head_masks_broadcast():
    ours, theirs = pair()
    x, _ = inputs(batch=2, lq=5)
    mask = torch.rand(2, H, 5, 5, generator=torch.Generator().manual_seed(3)) > 0.4
    mask[..., 0] = True  # every query sees something (torch gives NaN otherwise)
    expected, _ = theirs(x, x, x, attn_mask=torch_masks(mask, 2, 5, 5))
    torch.testing.assert_close(ours(x, mask=mask), expected)


def test_gradients_equal_torch():
    ours, theirs = pair()
    x, _ = inputs()
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(x_ours, causal=True).square().sum().backward()
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)
    theirs(x_theirs, x_theirs, x_theirs, attn_mask=future, need_weights=False)[0].square().sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad)
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_weights_path_equals_fused_path():
    ours, _ = pair()
    x, memory = inputs(lq=4, lk=6)
    real = torch.arange(6)[None, :] < torch.tensor([6, 2, 1])[:, None]
    for kwargs in ({}, {"mask": real[:, None, None, :]}):
        torch.testing.assert_close(ours(x, memory, **kwargs), ours(x, memory, return_weights=True, **kwargs)[0])
    torch.testing.assert_close(ours(x, causal=True), ours(x, causal=True, return_weights=True)[0])


def test_fully_masked_query_gets_zeros_not_nan():
    ours, _ = pair()
    x, _ = inputs(batch=2, lq=4)
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    mask[1, 0, 2] = False  # query 2 of sequence 1 may attend to nothing
    for return_weights in (False, True):
        out = ours(x, mask=mask, return_weights=return_weights)
        out, weights = out if return_weights else (out, None)
        assert torch.isfinite(out).all()
        # every head's output is zero, so only the output projection's bias is left
        torch.testing.assert_close(out[1, 2], ours.out_proj.bias)
        if weights is not None:
            assert (weights[1, :, 2] == 0).all()


def test_dropout_only_in_training():
    torch.manual_seed(0)
    mha = attnlib.MultiHeadAttention(D, H, dropout=0.5)
    x, _ = inputs()
    mha.eval()
    torch.testing.assert_close(mha(x), mha(x))
    mha.train()
    assert not torch.allclose(mha(x), mha(x))
    _, weights = mha(x, return_weights=True)
    assert (weights == 0).any()  # some weights dropped...
    assert weights.max() > 1.0 / x.shape[1]  # ...and the rest scaled up by 1 / (1 - p)


def test_self_attention_makes_one_fused_projection(monkeypatch):
    mha = attnlib.MultiHeadAttention(D, H)
    x, memory = inputs()
    calls = []
    real_linear = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda *a, **k: calls.append(a[1].shape) or real_linear(*a, **k))
    mha(x)
    assert calls[0] == (3 * D, D)  # Q, K and V with one matrix multiplication (then W_O)
    calls.clear()
    mha(x, memory)
    assert calls[:2] == [(D, D), (2 * D, D)]  # cross-attention: Q, then K and V together


def test_split_and_merge_heads_are_inverse_and_slice_features():
    x = torch.arange(2 * 3 * 8.0).reshape(2, 3, 8)  # (B, L, d_model)
    heads = split_heads(x, 4)  # (B, H, L, d_head)
    assert heads.shape == (2, 4, 3, 2)
    torch.testing.assert_close(heads[1, 2, 0], x[1, 0, 4:6])  # head 2 holds features 4..5
    torch.testing.assert_close(merge_heads(heads), x)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: attnlib.MultiHeadAttention(10, 3), "d_model=10 is not divisible by num_heads=3"),
        (lambda: attnlib.MultiHeadAttention(8, 0), "num_heads must be >= 1, got 0"),
        (lambda: attnlib.MultiHeadAttention(8, 2, dropout=1.0), r"dropout must be a number in \[0, 1\)"),
    ],
)
def test_construction_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()
    with pytest.raises(TypeError, match="d_model must be an int"):
        attnlib.MultiHeadAttention(8.0, 2)


def test_forward_errors_name_shapes_and_dtypes():
    mha = attnlib.MultiHeadAttention(D, H)
    x, memory = inputs(batch=3, lq=5, lk=6)
    with pytest.raises(ValueError, match=r"query must have shape \(B, Lq, d_model\) with d_model=16, got shape \(3, 5, 8\)"):
        mha(torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match=r"query must have shape .* got shape \(5, 16\)"):
        mha(torch.randn(5, D))
    with pytest.raises(TypeError, match="query must be a floating-point tensor"):
        mha(torch.ones(3, 5, D, dtype=torch.long))
    with pytest.raises(TypeError, match="query has dtype torch.float64 but the layer's weights are torch.float32"):
        mha(x.double())
    with pytest.raises(ValueError, match="share the batch size"):
        mha(x, memory[:2])
    with pytest.raises(ValueError, match="key and value must have the same length Lk"):
        mha(x, memory, memory[:, :4])
    with pytest.raises(ValueError, match=r"looks like a \(B, Lk\) key-padding mask.*\(3, 1, 1, 6\)"):
        mha(x, memory, mask=torch.ones(3, 6, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a boolean tensor"):
        mha(x, mask=torch.ones(3, 1, 5, 5))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 1, 5, 5\) cannot be broadcast"):
        mha(x, mask=torch.ones(2, 1, 5, 5, dtype=torch.bool))


# ----- grouped-query attention (lesson 11) ------------------------------------------------------
def test_grouped_query_with_as_many_kv_heads_is_plain_multi_head():
    ours, _ = pair()
    grouped = attnlib.MultiHeadAttention(D, H, num_kv_heads=H).eval()
    grouped.load_state_dict(ours.state_dict())
    x, memory = inputs(lk=6)
    torch.testing.assert_close(grouped(x, causal=True), ours(x, causal=True))
    torch.testing.assert_close(grouped(x, memory), ours(x, memory))


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_shares_each_kv_head_with_a_group_of_query_heads(kv_heads):
    torch.manual_seed(3)
    mha = attnlib.MultiHeadAttention(D, H, num_kv_heads=kv_heads).eval()
    d_head = D // H
    assert mha.in_proj_weight.shape == (D + 2 * kv_heads * d_head, D)
    assert sum(p.numel() for p in mha.parameters()) == (D + 2 * kv_heads * d_head) * (D + 1) + D * D + D
    x, _ = inputs()
    w, b = mha.in_proj_weight, mha.in_proj_bias
    q = (x @ w[:D].T + b[:D]).unflatten(-1, (H, d_head)).transpose(1, 2)  # (B, H, L, d_head)
    k = (x @ w[D:D + kv_heads * d_head].T + b[D:D + kv_heads * d_head]).unflatten(-1, (kv_heads, d_head))
    v = (x @ w[D + kv_heads * d_head:].T + b[D + kv_heads * d_head:]).unflatten(-1, (kv_heads, d_head))
    group = H // kv_heads
    k = k.transpose(1, 2).repeat_interleave(group, dim=1)  # (B, H, L, d_head): query head h uses KV head h // group
    v = v.transpose(1, 2).repeat_interleave(group, dim=1)
    heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, L, d_head)
    expected = mha.out_proj(heads.transpose(1, 2).flatten(2))
    with torch.no_grad():
        torch.testing.assert_close(mha(x, causal=True), expected)
        out, weights = mha(x, causal=True, return_weights=True)
    torch.testing.assert_close(out, expected)
    assert weights.shape == (3, H, 5, 5)


# ----- positions inside attention (lesson 07) --------------------------------------------------
def reference_heads(mha, x):
    """q, k, v (B, H, L, d_head) of a self-attention layer without grouping, computed by hand."""
    q, k, v = (x @ mha.in_proj_weight.T + mha.in_proj_bias).chunk(3, dim=-1)
    return [t.unflatten(-1, (mha.num_heads, mha.d_head)).transpose(1, 2) for t in (q, k, v)]


def test_rope_rotates_queries_and_keys_only():
    torch.manual_seed(4)
    mha = attnlib.MultiHeadAttention(D, H, positions="rope").eval()
    x, _ = inputs()
    q, k, v = reference_heads(mha, x)
    heads = F.scaled_dot_product_attention(attnlib.apply_rope(q), attnlib.apply_rope(k), v, is_causal=True)
    with torch.no_grad():
        torch.testing.assert_close(mha(x, causal=True), mha.out_proj(heads.transpose(1, 2).flatten(2)))


def test_rope_layer_sees_relative_positions_only():
    """The same 4 tokens after 7 cached ones: among themselves they attend as if they came first."""
    torch.manual_seed(5)
    mha = attnlib.MultiHeadAttention(D, H, positions="rope").eval()
    x, _ = inputs(batch=1, lq=4)
    cache = attnlib.KVCache(16)
    with torch.no_grad():
        mha(torch.randn(1, 7, D), cache=cache)  # 7 other tokens at positions 0..6
        _, shifted = mha(x, cache=cache, return_weights=True)  # (1, H, 4, 11): x at positions 7..10
        _, unshifted = mha(x, return_weights=True)  # (1, H, 4, 4): x at positions 0..3
    among_themselves = shifted[..., 7:] / shifted[..., 7:].sum(-1, keepdim=True)  # (1, H, 4, 4)
    torch.testing.assert_close(among_themselves, unshifted)


def test_alibi_adds_the_distance_penalty_per_head():
    torch.manual_seed(6)
    mha = attnlib.MultiHeadAttention(D, H, positions="alibi").eval()
    x, _ = inputs()
    q, k, v = reference_heads(mha, x)
    bias = attnlib.alibi_bias(H, 5, 5)  # (H, L, L)
    allowed = torch.ones(5, 5, dtype=torch.bool).tril()
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.masked_fill(~allowed, float("-inf")))
    expected = mha.out_proj(heads.transpose(1, 2).flatten(2))
    with torch.no_grad():
        torch.testing.assert_close(mha(x, causal=True), expected)
        torch.testing.assert_close(mha(x, causal=True, return_weights=True)[0], expected)


# ----- the KV cache (lesson 11) -----------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"num_kv_heads": 2}, {"num_kv_heads": 1, "positions": "rope"},
                                     {"positions": "alibi"}])
def test_cached_steps_equal_one_causal_pass(options):
    torch.manual_seed(7)
    mha = attnlib.MultiHeadAttention(D, H, **options).eval()
    x = torch.randn(2, 9, D)
    with torch.no_grad():
        full = mha(x, causal=True)  # (B, 9, D)
        cache = attnlib.KVCache(12)
        pieces = [mha(x[:, :4], cache=cache, causal=True)]  # a prompt of 4 tokens
        pieces.append(mha(x[:, 4:7], cache=cache, causal=True))  # 3 more at once
        pieces += [mha(x[:, t:t + 1], cache=cache, causal=True) for t in (7, 8)]  # then one at a time
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)
    assert cache.length == 9
    kv_heads = options.get("num_kv_heads", H)
    assert cache.keys.shape == (2, kv_heads, 12, D // H)
    assert cache.nbytes == 2 * 2 * kv_heads * 9 * (D // H) * 4  # keys and values, fp32


def test_cache_is_refused_where_it_cannot_apply():
    mha = attnlib.MultiHeadAttention(D, H)
    x, memory = inputs(lk=6)
    with pytest.raises(ValueError, match="a KV cache is for self-attention"):
        mha(x, memory, cache=attnlib.KVCache(8))
    with pytest.raises(TypeError, match="cache must be an attnlib.kv_cache.KVCache"):
        mha(x, cache=[])
    cache = attnlib.KVCache(6)
    with torch.no_grad():
        mha(x, cache=cache, causal=True)
        with pytest.raises(ValueError, match="the cache holds at most 6 positions; 5 are cached and 5 more"):
            mha(x, cache=cache, causal=True)
    with pytest.raises(ValueError, match="positions='rope' is for self-attention"):
        attnlib.MultiHeadAttention(D, H, positions="rope")(x, memory)


def test_kv_cache_reset_and_errors():
    cache = attnlib.KVCache(4)
    assert cache.nbytes == 0 and cache.length == 0 and "unallocated" in repr(cache)
    keys = torch.randn(1, 2, 3, 5)
    k, v = cache.append(keys, keys + 1)
    torch.testing.assert_close(k, keys)
    torch.testing.assert_close(v, keys + 1)
    cache.reset()
    assert cache.length == 0 and cache.nbytes == 0
    with pytest.raises(ValueError, match="this cache holds"):
        cache.append(torch.randn(1, 3, 1, 5), torch.randn(1, 3, 1, 5))
    with pytest.raises(ValueError, match="share one shape"):
        cache.append(torch.randn(1, 2, 1, 5), torch.randn(1, 2, 2, 5))
    with pytest.raises(ValueError, match="max_length must be an int >= 1"):
        attnlib.KVCache(0)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_kv_heads": 3}, "num_kv_heads must be an int that divides num_heads=4"),
    ({"num_kv_heads": 0}, "num_kv_heads must be an int that divides"),
    ({"positions": "learned"}, "positions must be one of"),
])
def test_new_options_are_checked_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        attnlib.MultiHeadAttention(D, H, **kwargs)
    with pytest.raises(ValueError, match="d_head = d_model / num_heads must be even"):
        attnlib.MultiHeadAttention(12, 4, positions="rope")
