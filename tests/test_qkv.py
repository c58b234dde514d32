"""attnlib.QKVProjection: learned queries, keys and values."""

import pytest
import torch
import torch.nn.functional as F

import attnlib
from attnlib import QKVProjection


def _inputs(B=2, Lq=3, Lk=5, d_model=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    asking = torch.randn(B, Lq, d_model, generator=generator)  # (B, Lq, d_model)
    answering = torch.randn(B, Lk, d_model, generator=generator)  # (B, Lk, d_model)
    return asking, answering


def test_shapes_for_cross_and_self_attention():
    torch.manual_seed(0)
    projection = QKVProjection(8, 4, 6)
    asking, answering = _inputs()
    q, k, v = projection(asking, answering)
    assert (q.shape, k.shape, v.shape) == ((2, 3, 4), (2, 5, 4), (2, 5, 6))
    q, k, v = projection(asking)  # self-attention: keys and values from the same input
    assert (q.shape, k.shape, v.shape) == ((2, 3, 4), (2, 3, 4), (2, 3, 6))
    q, k, v = projection(asking[0], answering[0])  # no batch dimension
    assert (q.shape, k.shape, v.shape) == ((3, 4), (5, 4), (5, 6))
    assert QKVProjection(8, 4).d_v == 4  # d_v defaults to d_k


def test_projection_is_three_matrix_products():
    torch.manual_seed(0)
    asking, answering = _inputs()
    for bias in (False, True):
        projection = QKVProjection(8, 4, 6, bias=bias)
        q, k, v = projection(asking, answering)
        torch.testing.assert_close(q, F.linear(asking, projection.w_q.weight, projection.w_q.bias))
        W_K = projection.w_k.weight.T  # (d_model, d_k)
        expected_k = answering @ W_K + (projection.w_k.bias if bias else 0)  # (B, Lk, d_k)
        torch.testing.assert_close(k, expected_k)
        torch.testing.assert_close(v, answering @ projection.w_v.weight.T + (projection.w_v.bias if bias else 0))
        expected_count = 8 * (4 + 4 + 6) + (4 + 4 + 6 if bias else 0)
        assert sum(p.numel() for p in projection.parameters()) == expected_count


def test_the_three_projections_are_independent():
    torch.manual_seed(0)
    projection = QKVProjection(8, 8)
    assert not torch.equal(projection.w_q.weight, projection.w_k.weight)
    assert not torch.equal(projection.w_k.weight, projection.w_v.weight)
    asking, answering = _inputs()
    q, k, v = projection(asking, answering)
    (q.sum() + k.sum() + v.sum()).backward()
    for layer in (projection.w_q, projection.w_k, projection.w_v):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_attend_equals_attention_on_the_projections():
    torch.manual_seed(0)
    projection = QKVProjection(8, 4, 6)
    asking, answering = _inputs()
    q, k, v = projection(asking, answering)
    output, weights = projection.attend(asking, answering, return_weights=True)
    torch.testing.assert_close(output, F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(weights, torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1))
    torch.testing.assert_close(projection.attend(asking, answering), output)

    padding = torch.tensor([[True, True, True, False, False], [True] * 5])  # (B, Lk), True = real token
    output, weights = projection.attend(asking, answering, padding[:, None, :], return_weights=True)
    assert weights[0, :, 3:].abs().max() == 0  # padded keys get no weight
    torch.testing.assert_close(output, attnlib.scaled_dot_product_attention(q, k, v, padding[:, None, :]))

    output = projection.attend(asking, causal=True)  # self-attention with a causal mask
    q, k, v = projection(asking)
    torch.testing.assert_close(output, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((8.0, 4), TypeError, "d_model must be an int"),
        ((0, 4), ValueError, "d_model must be >= 1"),
        ((8, 0), ValueError, "d_k must be >= 1"),
        ((8, 4, -1), ValueError, "d_v must be >= 1"),
        ((8, True), TypeError, "d_k must be an int"),
    ],
)
def test_constructor_errors(args, error, message):
    with pytest.raises(error, match=message):
        QKVProjection(*args)
    with pytest.raises(TypeError, match="bias must be True or False"):
        QKVProjection(8, 4, bias=1)


def test_input_errors_name_the_problem():
    projection = QKVProjection(8, 4)
    asking, answering = _inputs()
    with pytest.raises(TypeError, match="queries_from must be a torch.Tensor"):
        projection(asking.tolist())
    with pytest.raises(TypeError, match="keys_values_from must be a floating-point tensor"):
        projection(asking, answering.long())
    with pytest.raises(ValueError, match=r"queries_from must have shape \(B, Lq, d_model\) \(at least 2"):
        projection(torch.randn(8))
    with pytest.raises(ValueError, match=r"keys_values_from must have shape \(B, Lk, d_model\) with d_model=8 .*got shape \(2, 5, 7\)"):
        projection(asking, torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"batch dimensions of queries_from \(2, 3, 8\) and keys_values_from \(3, 5, 8\)"):
        projection(asking, torch.randn(3, 5, 8))
    with pytest.raises(TypeError, match="has dtype torch.float64 but the projection's weights are torch.float32"):
        projection(asking.double())


def test_mixed_dtypes_are_fine_under_autocast():
    projection = QKVProjection(8, 4)
    asking, answering = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k, v = projection(asking.bfloat16(), answering)
        output = projection.attend(asking.bfloat16(), answering)
    assert q.dtype == torch.bfloat16 and output.shape == (2, 3, 4)
    assert torch.isfinite(output.float()).all()


def test_repr_names_the_sizes():
    assert "d_model=8, d_k=4, d_v=6, bias=False" in repr(QKVProjection(8, 4, 6))
