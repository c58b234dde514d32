"""attnlib's dot-product scores, cosine similarity and masked softmax."""

import pytest
import torch
import torch.nn.functional as F

import attnlib


def test_dot_product_scores_is_a_batched_matmul():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 4, generator=g)  # (B, Lq, d)
    k = torch.randn(2, 5, 4, generator=g)  # (B, Lk, d)
    scores = attnlib.dot_product_scores(q, k)
    assert scores.shape == (2, 3, 5)
    torch.testing.assert_close(scores[1, 2, 3], torch.dot(q[1, 2], k[1, 3]))
    torch.testing.assert_close(attnlib.dot_product_scores(q, k, scale=0.5), scores * 0.5)
    with pytest.raises(ValueError, match=r"same last dimension d.*\(2, 3, 4\).*\(5, 3\)"):
        attnlib.dot_product_scores(q, torch.randn(5, 3))


def test_cosine_similarity_matches_torch_and_handles_zero():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 6, generator=g)
    b = torch.randn(4, 6, generator=g)
    torch.testing.assert_close(attnlib.cosine_similarity(a, b), F.cosine_similarity(a, b, dim=-1))
    torch.testing.assert_close(attnlib.cosine_similarity(a, 3 * a), torch.ones(4))
    zero = torch.zeros(6)
    assert attnlib.cosine_similarity(zero, a[0]).item() == 0.0
    with pytest.raises(TypeError, match="floating-point"):
        attnlib.cosine_similarity(a.long(), b)


def test_masked_softmax_matches_softmax_without_mask():
    x = torch.randn(3, 4, 5)
    torch.testing.assert_close(attnlib.masked_softmax(x), torch.softmax(x, dim=-1))


def test_masked_softmax_zeroes_masked_and_empty_rows():
    x = torch.randn(2, 4)
    mask = torch.tensor([[True, False, True, False], [False, False, False, False]])
    w = attnlib.masked_softmax(x, mask)
    assert (w[~mask] == 0).all()
    torch.testing.assert_close(w[0].sum(), torch.tensor(1.0))
    assert (w[1] == 0).all()
    torch.testing.assert_close(w[0, [0, 2]], torch.softmax(x[0, [0, 2]], dim=-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_masked_softmax_is_stable_for_huge_scores(dtype):
    x = torch.tensor([[1e4, 1e4 - 1, -1e4]], dtype=dtype if dtype != torch.float16 else torch.float32)
    x = x.clamp(-6e4, 6e4).to(dtype)
    w = attnlib.masked_softmax(x)
    assert w.dtype == dtype and torch.isfinite(w).all()
    torch.testing.assert_close(w.float().sum(), torch.tensor(1.0), atol=1e-2, rtol=0)


def test_masked_softmax_errors():
    with pytest.raises(TypeError, match="mask must be a boolean tensor"):
        attnlib.masked_softmax(torch.randn(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"mask of shape \(4,\) cannot be broadcast"):
        attnlib.masked_softmax(torch.randn(2, 3), torch.ones(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="scores must be a floating-point tensor"):
        attnlib.masked_softmax(torch.ones(2, 3, dtype=torch.long))
