"""attnlib.AdditiveAttention: Bahdanau's score, masking, and its input checks."""

import pytest
import torch

import attnlib
from attnlib.seq2seq import DotProductAttention


def inputs(B=3, S=6, Dq=5, Dk=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(B, Dq, generator=g)  # (B, Dq)
    keys = torch.randn(B, S, Dk, generator=g)  # (B, S, Dk)
    lengths = torch.tensor([S, S - 2, 1][:B])  # (B,)
    mask = torch.arange(S)[None, :] < lengths[:, None]  # (B, S), True = real key
    return query, keys, mask


def test_scores_follow_the_formula_key_by_key():
    torch.manual_seed(0)
    attention = attnlib.AdditiveAttention(5, 7, 4)
    query, keys, _ = inputs()
    W_q, W_k = attention.query_proj.weight, attention.key_proj.weight  # (A, Dq), (A, Dk)
    v = attention.score.weight[0]  # (A,)
    scores = attention.scores(query, keys)  # (B, S)
    for b in range(3):
        for j in range(6):
            by_hand = v @ torch.tanh(W_q @ query[b] + W_k @ keys[b, j])
            torch.testing.assert_close(scores[b, j], by_hand)


def test_weights_sum_to_one_and_padding_gets_exactly_zero():
    torch.manual_seed(0)
    attention = attnlib.AdditiveAttention(5, 7, 4)
    query, keys, mask = inputs()
    context, weights = attention(query, keys, mask)
    assert context.shape == (3, 7) and weights.shape == (3, 6)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3))
    assert torch.all(weights[~mask] == 0.0)
    assert torch.all(weights[mask] > 0.0)
    torch.testing.assert_close(context, torch.einsum("bs,bsd->bd", weights, keys))


def test_padding_keys_do_not_change_the_result():
    torch.manual_seed(0)
    attention = attnlib.AdditiveAttention(5, 7, 4)
    query, keys, mask = inputs()
    garbage = keys.clone()
    garbage[~mask] = 1e4 * torch.randn(int((~mask).sum()), 7)  # (n_pad, Dk): huge values at padding
    expected = attention(query, keys, mask)
    got = attention(query, garbage, mask)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)
    # The same example alone, without any padding, gives the same answer.
    short = attention(query[2:], keys[2:, :1], None)
    torch.testing.assert_close(short[0], expected[0][2:])
    torch.testing.assert_close(short[1][:, 0], expected[1][2:, 0])


def test_no_mask_equals_an_all_true_mask_and_a_row_with_nothing_gives_zeros():
    torch.manual_seed(0)
    attention = attnlib.AdditiveAttention(5, 7, 4)
    query, keys, mask = inputs()
    everything = torch.ones(3, 6, dtype=torch.bool)
    for a, b in zip(attention(query, keys), attention(query, keys, everything)):
        torch.testing.assert_close(a, b)
    mask[1] = False
    context, weights = attention(query, keys, mask)
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    assert torch.all(weights[1] == 0) and torch.all(context[1] == 0)


def test_projected_keys_give_the_same_result():
    torch.manual_seed(0)
    attention = attnlib.AdditiveAttention(5, 7, 4)
    query, keys, mask = inputs()
    precomputed = attention.project_keys(keys)  # (B, S, A)
    for a, b in zip(attention(query, keys, mask), attention(query, keys, mask, projected_keys=precomputed)):
        torch.testing.assert_close(a, b)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    attention = attnlib.AdditiveAttention(5, 7, 4)
    query, keys, mask = inputs()
    context, _ = attention(query, keys, mask)
    context.pow(2).sum().backward()
    for name, parameter in attention.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_works_in_bfloat16_autocast_without_nan():
    torch.manual_seed(0)
    attention = attnlib.AdditiveAttention(5, 7, 4)
    query, keys, mask = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        context, weights = attention(query, keys, mask)
    assert torch.isfinite(context).all()
    torch.testing.assert_close(weights.float().sum(-1), torch.ones(3), atol=1e-2, rtol=0)
    assert torch.all(weights[~mask] == 0)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda q, k, m: (q[0], k, m), ValueError, r"query must have shape \(B, query_dim=5\)"),
        (lambda q, k, m: (q[:, :4], k, m), ValueError, r"query must have shape \(B, query_dim=5\), got shape \(3, 4\)"),
        (lambda q, k, m: (q, k[..., :6], m), ValueError, r"keys must have shape \(B, S, key_dim=7\)"),
        (lambda q, k, m: (q, k[0], m), ValueError, r"keys must have shape \(B, S, key_dim=7\), got shape \(6, 7\)"),
        (lambda q, k, m: (q[:2], k, m), ValueError, r"same batch size B"),
        (lambda q, k, m: (q.long(), k, m), TypeError, r"query must be a floating-point tensor"),
        (lambda q, k, m: (q, k.tolist(), m), TypeError, r"keys must be a torch.Tensor"),
        (lambda q, k, m: (q, k, m.float()), TypeError, r"mask must be a boolean tensor"),
        (lambda q, k, m: (q, k, m[:, :5]), ValueError, r"mask of shape \(3, 5\) cannot be broadcast"),
    ],
)
def test_input_errors_name_the_problem(make, error, match):
    attention = attnlib.AdditiveAttention(5, 7, 4)
    with pytest.raises(error, match=match):
        attention(*make(*inputs()))


def test_bad_projected_keys_and_bad_sizes_are_refused():
    attention = attnlib.AdditiveAttention(5, 7, 4)
    query, keys, mask = inputs()
    with pytest.raises(ValueError, match=r"projected_keys must be project_keys\(keys\).*\(3, 6, 4\)"):
        attention(query, keys, mask, projected_keys=torch.zeros(3, 6, 7))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="hidden_dim must be a positive int"):
            attnlib.AdditiveAttention(5, 7, bad)


def test_dot_product_attention_matches_torch_sdpa_on_projections():
    torch.manual_seed(0)
    attention = DotProductAttention(5, 7, 4)
    query, keys, mask = inputs()
    context, weights = attention(query, keys, mask)
    q = attention.query_proj(query)[:, None, :]  # (B, 1, A)
    k = attention.key_proj(keys)  # (B, S, A)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, keys, attn_mask=mask[:, None, :])  # (B, 1, Dk)
    torch.testing.assert_close(context, expected[:, 0])
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert torch.all(weights[~mask] == 0)
    # Same W_q, W_k as additive attention; only v is extra.
    additive = attnlib.AdditiveAttention(5, 7, 4)
    n_dot = sum(p.numel() for p in attention.parameters())
    n_additive = sum(p.numel() for p in additive.parameters())
    assert n_additive - n_dot == 4


@pytest.mark.parametrize("make", [lambda: attnlib.AdditiveAttention(5, 7, 4), lambda: DotProductAttention(5, 7, 4)])
def test_attend_prepared_equals_forward_when_every_row_may_attend(make):
    torch.manual_seed(0)
    attention = make()
    query, keys, mask = inputs()
    projected = attention.project_keys(keys)  # (B, S, A)
    bias = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))  # (B, S)
    for a, b in zip(attention.attend_prepared(query, keys, projected, bias), attention(query, keys, mask)):
        torch.testing.assert_close(a, b)
    _, weights = attention.attend_prepared(query, keys, projected, bias)
    assert torch.all(weights[~mask] == 0)


def test_a_scorer_must_say_how_it_scores():
    from attnlib.additive_attention import QueryKeyProjections

    query, keys, mask = inputs()
    with pytest.raises(NotImplementedError):
        QueryKeyProjections(5, 7, 4)(query, keys, mask)
