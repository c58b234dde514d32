"""attnlib.scaled_dot_product_attention against torch, and its contract."""

import math

import pytest
import torch
import torch.nn.functional as F

import attnlib
from attnlib.attention import _fused_attention, _readable_attention, _with_causal


def qkv(*batch, lq=5, lk=7, d_k=8, d_v=6, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, lq, d_k, generator=g).to(dtype)  # (..., Lq, d_k)
    k = torch.randn(*batch, lk, d_k, generator=g).to(dtype)  # (..., Lk, d_k)
    v = torch.randn(*batch, lk, d_v, generator=g).to(dtype)  # (..., Lk, d_v)
    return q, k, v


@pytest.mark.parametrize("batch", [(), (3,), (2, 4), (2, 1, 3)])
@pytest.mark.parametrize("return_weights", [False, True])
def test_matches_torch_without_mask(batch, return_weights):
    q, k, v = qkv(*batch)
    expected = F.scaled_dot_product_attention(q, k, v)
    got = attnlib.scaled_dot_product_attention(q, k, v, return_weights=return_weights)
    got = got[0] if return_weights else got
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("return_weights", [False, True])
def test_matches_torch_with_causal_and_padding(return_weights):
    q, k, v = qkv(2, lq=6, lk=6)
    lengths = torch.tensor([6, 4])
    padding = torch.arange(6)[None, :] < lengths[:, None]  # (B, Lk), True = real key
    mask = padding[:, None, :]  # (B, 1, Lk)
    both = mask & torch.ones(6, 6, dtype=torch.bool).tril()  # (B, Lq, Lk)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=both)
    got = attnlib.scaled_dot_product_attention(q, k, v, mask, causal=True, return_weights=return_weights)
    got = got[0] if return_weights else got
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("lq,lk", [(3, 5), (5, 3), (4, 4)])
def test_causal_is_top_left_aligned_like_torch(lq, lk):
    q, k, v = qkv(2, lq=lq, lk=lk)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for weights in (False, True):
        got = attnlib.scaled_dot_product_attention(q, k, v, causal=True, return_weights=weights)
        torch.testing.assert_close(got[0] if weights else got, expected)


def test_custom_scale_matches_torch():
    q, k, v = qkv(2)
    expected = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(attnlib.scaled_dot_product_attention(q, k, v, scale=0.3), expected)
    out, w = attnlib.scaled_dot_product_attention(q, k, v, scale=0.3, return_weights=True)
    torch.testing.assert_close(out, expected)


def test_weights_are_a_distribution_and_causal_hides_the_future():
    q, k, v = qkv(3, lq=6, lk=6)
    _, w = attnlib.scaled_dot_product_attention(q, k, v, causal=True, return_weights=True)
    assert w.shape == (3, 6, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 6))
    assert (w.triu(diagonal=1) == 0).all()


def test_future_values_do_not_change_causal_outputs():
    q, k, v = qkv(1, lq=6, lk=6)
    out = attnlib.scaled_dot_product_attention(q, k, v, causal=True)
    v2, k2 = v.clone(), k.clone()
    v2[:, 4:] += 100.0
    k2[:, 4:] -= 50.0
    out2 = attnlib.scaled_dot_product_attention(q, k2, v2, causal=True)
    torch.testing.assert_close(out[:, :4], out2[:, :4])


def test_padded_keys_do_not_change_outputs():
    q, k, v = qkv(2, lq=3, lk=5)
    mask = torch.tensor([True, True, True, False, False])  # (Lk,)
    out = attnlib.scaled_dot_product_attention(q, k, v, mask)
    v2 = v.clone()
    v2[..., 3:, :] = 1e4
    torch.testing.assert_close(attnlib.scaled_dot_product_attention(q, k, v2, mask), out)
    torch.testing.assert_close(out, attnlib.scaled_dot_product_attention(q, k[..., :3, :], v[..., :3, :]))


@pytest.mark.parametrize("return_weights", [False, True])
def test_query_that_sees_nothing_gets_zeros_not_nan(return_weights):
    q, k, v = qkv(2, lq=4, lk=5)
    q.requires_grad_(True)
    mask = torch.ones(2, 4, 5, dtype=torch.bool)
    mask[0, 1] = False  # query 1 of batch 0 may attend to nothing
    result = attnlib.scaled_dot_product_attention(q, k, v, mask, return_weights=return_weights)
    out = result[0] if return_weights else result
    assert torch.isfinite(out).all()
    assert (out[0, 1] == 0).all()
    if return_weights:
        assert (result[1][0, 1] == 0).all()
        torch.testing.assert_close(result[1][1].sum(-1), torch.ones(4))
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_causal_and_mask_that_leave_a_row_empty():
    q, k, v = qkv(1, lq=3, lk=3)
    mask = torch.tensor([False, True, True])  # key 0 hidden; causal row 0 sees only key 0
    out = attnlib.scaled_dot_product_attention(q, k, v, mask, causal=True)
    assert (out[0, 0] == 0).all() and torch.isfinite(out).all()


def test_zero_keys_gives_zeros():
    q, k, v = qkv(2, lq=3, lk=0)
    out, w = attnlib.scaled_dot_product_attention(q, k, v, return_weights=True)
    assert out.shape == (2, 3, 6) and (out == 0).all()
    assert w.shape == (2, 3, 0)
    assert (attnlib.scaled_dot_product_attention(q, k, v) == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("return_weights", [False, True])
def test_huge_logits_stay_finite(dtype, return_weights):
    q, k, v = qkv(2)
    q, k, v = (q * 300).to(dtype), (k * 300).to(dtype), v.to(dtype)  # q·k up to ~1e6: overflows fp16
    result = attnlib.scaled_dot_product_attention(q, k, v, return_weights=return_weights)
    out = result[0] if return_weights else result
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    if return_weights:
        torch.testing.assert_close(result[1].float().sum(-1), torch.ones(2, 5), atol=1e-2, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_float32_reference(dtype):
    q, k, v = qkv(2, 3)
    expected = F.scaled_dot_product_attention(q, k, v)
    got = attnlib.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), return_weights=True)[0]
    torch.testing.assert_close(got.float(), expected, atol=2e-2, rtol=2e-2)


def _masks():
    """Masks of several shapes, (B, 1, Lq, Lk) random, with an empty row, and key padding."""
    random = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1)) > 0.3  # (B, 1, Lq, Lk)
    empty_row = random.clone()
    empty_row[1, 0, 3] = False  # query 3 of sequence 1 may attend to nothing
    padding = (torch.arange(6)[None, :] < torch.tensor([6, 2])[:, None])[:, None, None, :]  # (B, 1, 1, Lk)
    left_padding = ~padding  # with causal=True, query 0 of sequence 0 sees nothing at all
    left_padding[1] = True
    return {"none": None, "random": random, "empty_row": empty_row, "padding": padding, "left_padding": left_padding}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", list(_masks()))
def test_readable_and_fused_paths_agree(causal, kind):
    """The fused path (no weights asked for) equals the readable one, empty rows included."""
    q, k, v = qkv(2, 3, lq=6, lk=6)
    mask = _masks()[kind]
    full = _with_causal(mask, 6, 6, q.device) if causal else mask
    full = None if full is None else torch.broadcast_to(full, (2, 3, 6, 6))
    readable = _readable_attention(q, k, v, full, 1 / math.sqrt(8), 0.0, False)
    fused = _fused_attention(q, k, v, mask, causal, 1 / math.sqrt(8), 0.0, (2, 3))
    torch.testing.assert_close(readable, fused)
    assert torch.isfinite(fused).all()
    via_public = attnlib.scaled_dot_product_attention(q, k, v, mask, causal=causal)
    with_weights, _ = attnlib.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    torch.testing.assert_close(via_public, fused)
    torch.testing.assert_close(with_weights, fused)


def test_gradients_match_torch():
    q, k, v = qkv(2, 2)
    inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref_inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    mask = torch.ones(5, 7, dtype=torch.bool).tril()
    attnlib.scaled_dot_product_attention(*inputs, mask, return_weights=True)[0].square().sum().backward()
    F.scaled_dot_product_attention(*ref_inputs, attn_mask=mask).square().sum().backward()
    for mine, ref in zip(inputs, ref_inputs):
        torch.testing.assert_close(mine.grad, ref.grad)


@pytest.mark.parametrize("return_weights", [False, True])
def test_dropout_drops_and_rescales(return_weights):
    torch.manual_seed(0)
    q, k, v = qkv(lq=200, lk=4, d_v=1)
    v = torch.ones_like(v)  # output = sum of kept weights / (1 - p)
    result = attnlib.scaled_dot_product_attention(q, k, v, dropout_p=0.5, return_weights=return_weights)
    out = result[0] if return_weights else result
    values = set(torch.round(out.flatten() * 1e4).tolist())
    assert len(values) > 2  # some weights were dropped
    assert abs(out.mean().item() - 1.0) < 0.15  # kept weights are rescaled by 1/(1-p)
    same = attnlib.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
    torch.testing.assert_close(same, torch.ones_like(same))


def test_causal_mask():
    m = attnlib.causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert m.tolist() == [[True, False, False, False], [True, True, False, False],
                          [True, True, True, False], [True, True, True, True]]
    assert attnlib.causal_mask(0).shape == (0, 0)
    with pytest.raises(ValueError, match="size must be >= 0"):
        attnlib.causal_mask(-1)
    with pytest.raises(TypeError, match="size must be an int"):
        attnlib.causal_mask(2.5)


class TestErrors:
    def test_mismatched_d_k(self):
        q, k, v = qkv(2)
        with pytest.raises(ValueError, match=r"share d_k.*\(2, 5, 8\).*\(2, 7, 4\)"):
            attnlib.scaled_dot_product_attention(q, k[..., :4], v)

    def test_mismatched_key_value_lengths(self):
        q, k, v = qkv(2)
        with pytest.raises(ValueError, match=r"same number of positions Lk.*\(2, 7, 8\).*\(2, 6, 6\)"):
            attnlib.scaled_dot_product_attention(q, k, v[:, :6])

    def test_too_few_dimensions(self):
        q, k, v = qkv()
        with pytest.raises(ValueError, match=r"query must have shape \(\.\.\., Lq, d_k\).*got shape \(8,\)"):
            attnlib.scaled_dot_product_attention(q[0], k, v)

    def test_batch_dimensions_do_not_broadcast(self):
        q, _, _ = qkv(2)
        _, k, v = qkv(3)
        with pytest.raises(ValueError, match="do not broadcast"):
            attnlib.scaled_dot_product_attention(q, k, v)

    def test_integer_or_mixed_dtypes(self):
        q, k, v = qkv(2)
        with pytest.raises(TypeError, match="query must be a floating-point tensor, got dtype torch.int64"):
            attnlib.scaled_dot_product_attention(q.long(), k, v)
        with pytest.raises(TypeError, match="share one dtype"):
            attnlib.scaled_dot_product_attention(q, k.double(), v)

    def test_not_a_tensor(self):
        _, k, v = qkv(2)
        with pytest.raises(TypeError, match="query must be a torch.Tensor, got list"):
            attnlib.scaled_dot_product_attention([[1.0]], k, v)

    def test_mask_must_be_boolean(self):
        q, k, v = qkv(2)
        with pytest.raises(TypeError, match="mask must be a boolean tensor.*torch.float32"):
            attnlib.scaled_dot_product_attention(q, k, v, torch.ones(5, 7))

    def test_mask_must_broadcast(self):
        q, k, v = qkv(2)
        with pytest.raises(ValueError, match=r"mask of shape \(5, 6\) cannot be broadcast.*\(2, 5, 7\)"):
            attnlib.scaled_dot_product_attention(q, k, v, torch.ones(5, 6, dtype=torch.bool))
        with pytest.raises(ValueError, match="must broadcast to it, not beyond"):
            attnlib.scaled_dot_product_attention(q, k, v, torch.ones(4, 2, 5, 7, dtype=torch.bool))

    def test_bad_dropout_scale_and_causal(self):
        q, k, v = qkv(2)
        with pytest.raises(ValueError, match=r"dropout_p must be a number in \[0, 1\), got 1.0"):
            attnlib.scaled_dot_product_attention(q, k, v, dropout_p=1.0)
        with pytest.raises(TypeError, match="scale must be a finite number"):
            attnlib.scaled_dot_product_attention(q, k, v, scale="big")
        with pytest.raises(TypeError, match="causal must be True or False"):
            attnlib.scaled_dot_product_attention(q, k, v, causal=1)


# ----- an additive score bias (ALiBi, lesson 07) ----------------------------------------------
@pytest.mark.parametrize("return_weights", [False, True])
def test_bias_is_added_to_the_scaled_scores_like_torchs_float_mask(return_weights):
    q, k, v = qkv(2, 3, lq=5, lk=7)
    bias = torch.randn(3, 5, 7)  # (H, Lq, Lk), broadcast over the batch
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    got = attnlib.scaled_dot_product_attention(q, k, v, bias=bias, return_weights=return_weights)
    torch.testing.assert_close(got[0] if return_weights else got, expected)


@pytest.mark.parametrize("return_weights", [False, True])
def test_bias_with_mask_and_causal(return_weights):
    q, k, v = qkv(2, 3, lq=6, lk=6)
    bias = torch.randn(3, 6, 6)
    padding = (torch.arange(6)[None, :] < torch.tensor([6, 4])[:, None])[:, None, None, :]  # (B, 1, 1, Lk)
    allowed = padding & torch.ones(6, 6, dtype=torch.bool).tril()  # (B, 1, Lq, Lk)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.masked_fill(~allowed, float("-inf")))
    got = attnlib.scaled_dot_product_attention(q, k, v, padding, causal=True, bias=bias,
                                               return_weights=return_weights)
    torch.testing.assert_close(got[0] if return_weights else got, expected)


def test_bias_keeps_fully_masked_queries_at_zero():
    q, k, v = qkv(2, lq=4, lk=5)
    mask = torch.ones(2, 4, 5, dtype=torch.bool)
    mask[1, 2] = False  # query 2 of example 1 may attend to nothing
    bias = torch.randn(4, 5)
    for return_weights in (False, True):
        got = attnlib.scaled_dot_product_attention(q, k, v, mask, bias=bias, return_weights=return_weights)
        out = got[0] if return_weights else got
        assert torch.isfinite(out).all() and (out[1, 2] == 0).all()
        fine = F.scaled_dot_product_attention(q[0], k[0], v[0], attn_mask=bias)
        torch.testing.assert_close(out[0], fine)


def test_bias_gradients_match_the_readable_path():
    q, k, v = (t.requires_grad_() for t in qkv(2, lq=4, lk=4))
    bias = torch.randn(4, 4, requires_grad=True)
    attnlib.scaled_dot_product_attention(q, k, v, causal=True, bias=bias).sum().backward()
    fused = [t.grad.clone() for t in (q, k, v, bias)]
    for t in (q, k, v, bias):
        t.grad = None
    attnlib.scaled_dot_product_attention(q, k, v, causal=True, bias=bias, return_weights=True)[0].sum().backward()
    for a, t in zip(fused, (q, k, v, bias)):
        torch.testing.assert_close(a, t.grad)


@pytest.mark.parametrize("bias, error, message", [
    (torch.zeros(5, 7, dtype=torch.long), TypeError, "bias must be a floating-point tensor"),
    (torch.zeros(5, 6), ValueError, r"bias of shape \(5, 6\) must broadcast to the scores' shape \(2, 5, 7\)"),
    (torch.zeros(3, 2, 5, 7), ValueError, "and not beyond it"),
    ([[0.0]], TypeError, "bias must be a torch.Tensor"),
])
def test_bad_bias_is_explained(bias, error, message):
    q, k, v = qkv(2, lq=5, lk=7)
    with pytest.raises(error, match=message):
        attnlib.scaled_dot_product_attention(q, k, v, bias=bias)
