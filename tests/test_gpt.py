"""attnlib.GPT: shapes, the loss, causality, GPT-2's initialisation, and generation with a KV cache."""

import math

import pytest
import torch
import torch.nn.functional as F

import attnlib

V, T = 11, 16


def model(seed=0, **options):
    torch.manual_seed(seed)
    settings = dict(vocab_size=V, block_size=T, n_layer=2, n_head=2, d_model=16)
    settings.update(options)
    return attnlib.GPT(**settings).eval()


def tokens(batch=3, length=T, seed=1):
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_forward_gives_logits_and_the_mean_cross_entropy():
    gpt, idx = model(), tokens()
    logits = gpt(idx)
    assert logits.shape == (3, T, V)
    targets = tokens(seed=2)
    logits2, loss = gpt(idx, targets)
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)))
    assert abs(loss.item() - math.log(V)) < 0.2  # a fresh model is close to uniform over the vocabulary


@pytest.mark.parametrize("positions", ["learned", "rope", "alibi"])
def test_no_position_sees_the_future(positions):
    gpt, idx = model(positions=positions), tokens()
    changed = idx.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % V  # change every token from position 9 on
    with torch.no_grad():
        before, after = gpt(idx), gpt(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9])
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_weights_are_tied_and_counted_once():
    gpt = model()
    assert gpt.lm_head.weight is gpt.token_embedding.weight
    d, layers = 16, 2
    per_block = (3 * d * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 2 * (2 * d)
    expected = V * d + T * d + layers * per_block + 2 * d  # embeddings, blocks, final norm (no separate head)
    assert gpt.num_parameters() == expected == sum(p.numel() for p in gpt.parameters())


def test_gpt2_initialisation():
    torch.manual_seed(0)
    gpt = attnlib.GPT(vocab_size=500, block_size=64, n_layer=8, n_head=4, d_model=128)
    assert gpt.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert gpt.blocks[0].linear1.weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / math.sqrt(2 * 8)
    for block in gpt.blocks:
        assert block.linear2.weight.std().item() == pytest.approx(residual, rel=0.05)
        assert block.self_attn.out_proj.weight.std().item() == pytest.approx(residual, rel=0.1)
        assert (block.linear1.bias == 0).all() and block.norm_first


@pytest.mark.parametrize("options", [{}, {"positions": "rope"}, {"positions": "alibi"}, {"num_kv_heads": 1}])
def test_greedy_tokens_are_the_same_with_and_without_the_cache(options):
    gpt, prompt = model(seed=3, **options), tokens(batch=2, length=5)
    with_cache = gpt.generate(prompt, 30, temperature=0)  # 35 tokens: past block_size = 16
    without = gpt.generate(prompt, 30, temperature=0, use_cache=False)
    assert with_cache.shape == (2, 35)
    assert torch.equal(with_cache, without)
    assert torch.equal(with_cache[:, :5], prompt)


def test_cached_forward_equals_the_full_forward():
    gpt, idx = model(seed=4), tokens(batch=2, length=10)
    caches = [attnlib.KVCache(T) for _ in gpt.blocks]
    with torch.no_grad():
        full = gpt(idx)
        pieces = [gpt(idx[:, :6], caches=caches)] + [gpt(idx[:, t:t + 1], caches=caches) for t in range(6, 10)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_sampling_is_reproducible_and_top_k_1_is_greedy():
    gpt, prompt = model(seed=5), tokens(batch=2, length=4)
    a = gpt.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(0))
    b = gpt.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    greedy = gpt.generate(prompt, 8, temperature=0)
    assert torch.equal(gpt.generate(prompt, 8, temperature=0.7, top_k=1), greedy)
    assert torch.equal(gpt.generate(prompt, 8, temperature=0.7, top_p=1e-6), greedy)


def test_a_long_prompt_is_cropped_and_the_mode_is_restored():
    gpt = model(seed=6).train()
    out = gpt.generate(tokens(batch=1, length=40), 3, temperature=0)
    assert out.shape == (1, 43) and gpt.training


@pytest.mark.parametrize("call, error, message", [
    (lambda g: g(torch.zeros(2, 3)), TypeError, r"idx must be a \(B, T\) tensor of token ids"),
    (lambda g: g(torch.zeros(2, T + 1, dtype=torch.long)), ValueError, "at most block_size=16 tokens"),
    (lambda g: g(torch.full((1, 3), V, dtype=torch.long)), ValueError, r"token ids must lie in \[0, vocab_size=11\)"),
    (lambda g: g(tokens(), tokens(length=5)), ValueError, "targets must have idx's shape"),
    (lambda g: g.generate(tokens(), -1), ValueError, "max_new_tokens must be an int >= 0"),
    (lambda g: g.generate(tokens(), 2, temperature=-1), ValueError, "temperature must be a number >= 0"),
    (lambda g: g.generate(tokens(), 2, top_k=0), ValueError, "top_k must be an int >= 1"),
    (lambda g: g.generate(tokens(), 2, top_p=1.5), ValueError, r"top_p must be a number in \(0, 1\]"),
    (lambda g: g.generate(tokens(length=0), 2), ValueError, "at least one token"),
])
def test_bad_input_is_explained(call, error, message):
    with pytest.raises(error, match=message):
        call(model())


def test_bad_construction_is_explained():
    with pytest.raises(ValueError, match="n_layer must be a positive int"):
        attnlib.GPT(10, 8, 0, 2, 16)
    with pytest.raises(ValueError, match="positions must be one of"):
        attnlib.GPT(10, 8, 1, 2, 16, positions="sinusoidal")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        attnlib.GPT(10, 8, 1, 3, 16)
