"""attnlib.sampling: top-k and top-p keep exactly the tokens they promise; temperature and greedy."""

import pytest
import torch

from attnlib.sampling import sample_next_token, top_k_filter, top_p_filter


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = top_k_filter(logits, 2)
    assert torch.isfinite(kept).tolist() == [[False, True, False, True, False]]
    torch.testing.assert_close(kept[torch.isfinite(kept)], torch.tensor([5.0, 4.0]))
    assert torch.equal(top_k_filter(logits, 9), logits)


def smallest_set_reaching(probabilities, p):
    """By brute force: take tokens from the most likely down until their mass reaches p."""
    order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])
    kept, mass = set(), 0.0
    for i in order:
        kept.add(i)
        mass += probabilities[i]
        if mass >= p:
            break
    return kept


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.99, 1.0])
def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p(p):
    logits = torch.randn(20, 30, generator=torch.Generator().manual_seed(0)) * 2  # (B, V)
    kept = torch.isfinite(top_p_filter(logits, p))  # (B, V)
    probabilities = torch.softmax(logits.double(), dim=-1)
    for row in range(20):
        expected = smallest_set_reaching(probabilities[row].tolist(), p)
        assert set(kept[row].nonzero().flatten().tolist()) == expected
        assert probabilities[row][kept[row]].sum() >= p - 1e-6


def test_top_p_always_keeps_the_most_likely_token():
    logits = torch.tensor([[10.0, 0.0, 0.0]])
    assert torch.isfinite(top_p_filter(logits, 0.01)).tolist() == [[True, False, False]]


def test_greedy_and_temperature():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    assert sample_next_token(logits, temperature=0).tolist() == [1, 0]
    generator = torch.Generator().manual_seed(0)
    cold = sample_next_token(logits.repeat(2000, 1)[:2000], temperature=0.05, generator=generator)
    assert (cold == logits.repeat(1000, 1).argmax(-1)).float().mean() > 0.99  # cold: almost always the argmax
    draws = sample_next_token(torch.zeros(4000, 4), temperature=1.0, generator=generator)
    counts = torch.bincount(draws, minlength=4).float() / 4000
    assert (counts - 0.25).abs().max() < 0.03  # uniform logits: every token equally often
    hot = torch.tensor([[0.0, 3.0]]).repeat(4000, 1)
    share = sample_next_token(hot, temperature=3.0, generator=generator).float().mean()  # P(token 1)
    assert abs(share.item() - torch.softmax(torch.tensor([0.0, 1.0]), 0)[1].item()) < 0.03


def test_sampling_respects_the_filters():
    logits = torch.randn(500, 10, generator=torch.Generator().manual_seed(1))
    draws = sample_next_token(logits, temperature=1.5, top_k=3, generator=torch.Generator().manual_seed(2))
    allowed = logits.topk(3, dim=-1).indices  # (B, 3)
    assert (allowed == draws[:, None]).any(-1).all()


@pytest.mark.parametrize("call, error, message", [
    (lambda: top_k_filter(torch.randn(3), 0), ValueError, "top_k must be an int >= 1"),
    (lambda: top_p_filter(torch.randn(3), 0.0), ValueError, r"top_p must be a number in \(0, 1\]"),
    (lambda: top_p_filter(torch.arange(3), 0.5), TypeError, "floating-point"),
    (lambda: sample_next_token(torch.randn(2, 3), temperature=-0.5), ValueError, "temperature must be"),
    (lambda: sample_next_token(torch.randn(2, 0)), ValueError, "V >= 1"),
])
def test_bad_arguments_are_explained(call, error, message):
    with pytest.raises(error, match=message):
        call()
