"""attnlib.sinusoidal_positional_encoding: the public contract of lesson 07."""

import math

import pytest
import torch

import attnlib


def test_layout_is_the_papers():
    pe = attnlib.sinusoidal_positional_encoding(50, 16)
    assert pe.shape == (50, 16) and pe.dtype == torch.float32
    for p in (0, 1, 7, 49):
        for i in range(8):
            angle = p / 10000 ** (2 * i / 16)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_each_feature_pair_lies_on_the_unit_circle():
    pe = attnlib.sinusoidal_positional_encoding(100, 8)
    torch.testing.assert_close(pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2, torch.ones(100, 4))


@pytest.mark.parametrize("args, error, message", [
    ((10, 7), ValueError, "d_model must be even, got 7"),
    ((10, 0), ValueError, "d_model must be >= 2"),
    ((-1, 8), ValueError, "max_len must be >= 0"),
    ((10.0, 8), TypeError, "max_len must be an int"),
])
def test_bad_arguments_are_explained(args, error, message):
    with pytest.raises(error, match=message):
        attnlib.sinusoidal_positional_encoding(*args)


# ----- rotary positions (RoPE) -----------------------------------------------------------------
def rope_by_complex_numbers(x, offset=0, base=10000.0):
    """The rotation written with complex numbers: pair (a, b) -> (a + ib) · e^(i p θ)."""
    length, d = x.shape[-2], x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angles = torch.arange(offset, offset + length, dtype=torch.float64)[:, None] * theta  # (L, d/2)
    pairs = torch.view_as_complex(x.double().unflatten(-1, (d // 2, 2)).contiguous())  # (..., L, d/2)
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).flatten(-2).float()


def test_rope_is_a_rotation_of_each_feature_pair():
    x = torch.randn(2, 3, 9, 8)
    torch.testing.assert_close(attnlib.apply_rope(x), rope_by_complex_numbers(x))
    torch.testing.assert_close(attnlib.apply_rope(x, offset=5), rope_by_complex_numbers(x, offset=5))
    torch.testing.assert_close(attnlib.apply_rope(x, base=100.0), rope_by_complex_numbers(x, base=100.0))
    torch.testing.assert_close(attnlib.apply_rope(x)[..., 0, :], x[..., 0, :])  # position 0 is not turned


def test_rope_preserves_norms_and_dtype():
    x = torch.randn(4, 16, 32)
    torch.testing.assert_close(attnlib.apply_rope(x).norm(dim=-1), x.norm(dim=-1))
    assert attnlib.apply_rope(x.bfloat16()).dtype == torch.bfloat16


def test_rope_scores_depend_on_the_distance_only():
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        rotated_q = attnlib.apply_rope(q[None], offset=m)[0]  # q at position m
        rotated_k = attnlib.apply_rope(k[None], offset=n)[0]  # k at position n
        return (rotated_q @ rotated_k).item()

    for m, n in ((3, 1), (10, 8), (52, 50)):  # m - n = 2
        assert score(m, n) == pytest.approx(score(2, 0), abs=1e-4)
    assert abs(score(5, 0) - score(2, 0)) > 1e-3  # another distance, another score


def test_rope_offset_continues_the_positions():
    x = torch.randn(2, 10, 8)
    torch.testing.assert_close(attnlib.apply_rope(x)[:, 6:], attnlib.apply_rope(x[:, 6:], offset=6))


@pytest.mark.parametrize("x, kwargs, error, message", [
    (torch.randn(4, 7), {}, ValueError, "even d"),
    (torch.randn(7), {}, ValueError, r"\(\.\.\., L, d\)"),
    (torch.ones(4, 8, dtype=torch.long), {}, TypeError, "floating-point"),
    (torch.randn(4, 8), {"offset": -1}, ValueError, "offset must be an int >= 0"),
])
def test_rope_bad_arguments_are_explained(x, kwargs, error, message):
    with pytest.raises(error, match=message):
        attnlib.apply_rope(x, **kwargs)


# ----- ALiBi -----------------------------------------------------------------------------------
def test_alibi_slopes_are_the_papers_geometric_sequences():
    torch.testing.assert_close(attnlib.alibi_slopes(8), torch.tensor([2.0 ** -h for h in range(1, 9)]))
    torch.testing.assert_close(attnlib.alibi_slopes(4), torch.tensor([2.0 ** (-2 * h) for h in range(1, 5)]))
    # 6 heads: the 4 slopes of 4 heads, then every other slope of 8 heads: 2^-1 and 2^-3
    expected = [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]
    torch.testing.assert_close(attnlib.alibi_slopes(6), torch.tensor(expected))
    assert attnlib.alibi_slopes(1).tolist() == [2.0 ** -8]
    assert len(set(attnlib.alibi_slopes(12).tolist())) == 12


def test_alibi_bias_penalises_distance_per_head():
    bias = attnlib.alibi_bias(2, 4, 4)  # (H, Lq, Lk)
    slopes = attnlib.alibi_slopes(2)
    for h in range(2):
        for i in range(4):
            for j in range(4):
                assert bias[h, i, j].item() == pytest.approx(-slopes[h].item() * abs(i - j))
    torch.testing.assert_close(attnlib.alibi_bias(2, 1, 6, offset=5), attnlib.alibi_bias(2, 6, 6)[:, 5:])


@pytest.mark.parametrize("call, message", [
    (lambda: attnlib.alibi_slopes(0), "num_heads must be an int >= 1"),
    (lambda: attnlib.alibi_bias(2, -1, 3), "len_q must be an int >= 0"),
    (lambda: attnlib.alibi_bias(2, 3, 3, offset=1.5), "offset must be an int >= 0"),
])
def test_alibi_bad_arguments_are_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----- learned absolute positions --------------------------------------------------------------
def test_learned_positions_are_rows_of_a_trained_table():
    torch.manual_seed(0)
    table = attnlib.LearnedPositionalEmbedding(10, 6)
    assert table.weight.shape == (10, 6) and table.weight.requires_grad
    torch.testing.assert_close(table(4), table.weight[:4])
    torch.testing.assert_close(table(3, offset=7), table.weight[7:10])
    assert table(0).shape == (0, 6)
    embedding = torch.nn.Embedding(10, 6)  # the same lookup as nn.Embedding's, given the same weights
    embedding.weight.data.copy_(table.weight.data)
    torch.testing.assert_close(table(10), embedding(torch.arange(10)))
    table(10).sum().backward()
    torch.testing.assert_close(table.weight.grad, torch.ones(10, 6))  # every row gets its own gradient


def test_learned_positions_clamp_past_max_len_only_when_asked():
    torch.manual_seed(0)
    table = attnlib.LearnedPositionalEmbedding(5, 4, beyond="clamp")
    rows = table(9)  # positions 0..8: 5..8 have no row of their own
    torch.testing.assert_close(rows[:5], table.weight)
    torch.testing.assert_close(rows[5:], table.weight[4].expand(4, 4))  # all reuse the last row
    torch.testing.assert_close(table(2, offset=6), table.weight[4].expand(2, 4))
    strict = attnlib.LearnedPositionalEmbedding(5, 4)
    assert strict(5).shape == (5, 4)
    with pytest.raises(ValueError, match=r"positions up to 5 .* 0 \.\. 4 only \(max_len=5\).*beyond='clamp'"):
        strict(6)
    with pytest.raises(ValueError, match="positions up to 6"):
        strict(2, offset=5)
    assert "beyond='clamp'" in repr(table)


def test_learned_positions_follow_the_module_to_its_device_and_dtype():
    table = attnlib.LearnedPositionalEmbedding(4, 2).double()
    assert table(3).dtype == torch.float64
    assert table(3, offset=1).device == table.weight.device


@pytest.mark.parametrize("call, error, message", [
    (lambda: attnlib.LearnedPositionalEmbedding(0, 4), ValueError, "max_len must be >= 1"),
    (lambda: attnlib.LearnedPositionalEmbedding(4, 2.0), TypeError, "d_model must be an int"),
    (lambda: attnlib.LearnedPositionalEmbedding(4, 2, beyond="wrap"), ValueError, r"beyond must be one of \('error', 'clamp'\)"),
    (lambda: attnlib.LearnedPositionalEmbedding(4, 2)(-1), ValueError, "length must be an int >= 0"),
    (lambda: attnlib.LearnedPositionalEmbedding(4, 2)(2, offset=1.0), ValueError, "offset must be an int >= 0"),
])
def test_learned_positions_bad_arguments_are_explained(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_sinusoidal_shift_by_k_is_one_rotation_matrix_for_every_position():
    d, k = 12, 5
    pe = attnlib.sinusoidal_positional_encoding(200, d).double()
    omega = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    shift = torch.zeros(d, d, dtype=torch.float64)
    for i, w in enumerate(omega.tolist()):  # row vector [sin, cos] @ [[cos, -sin], [sin, cos]]
        c, s = math.cos(k * w), math.sin(k * w)
        shift[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    torch.testing.assert_close(pe[:-k] @ shift, pe[k:], atol=1e-5, rtol=0)  # the same matrix at every p
