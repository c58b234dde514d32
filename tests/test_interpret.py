"""attnlib.interpret (lesson 13) and attnlib.data.repeats: the attention-only model, head scores, ablation."""

import math

import pytest
import torch
import torch.nn.functional as F

import attnlib
from attnlib import data, interpret
from attnlib.multi_head import merge_heads, split_heads


# ----- data: repeated random tokens -------------------------------------------------------------
def test_repeated_tokens_repeat_a_block_of_distinct_tokens():
    d = data.repeated_tokens(200, length=20, vocab_size=12, min_period=3, max_period=9, seed=0)
    assert d.tokens.shape == (200, 20) and d.tokens.dtype == torch.int64 and len(d) == 200 and d.length == 20
    assert d.periods.shape == (200,) and set(d.periods.tolist()) == set(range(3, 10))  # every period drawn
    assert int(d.tokens.min()) >= 0 and int(d.tokens.max()) < 12 and d.vocab_size == 12
    for tokens, period in zip(d.tokens.tolist(), d.periods.tolist()):
        assert len(set(tokens[:period])) == period  # the first pass: distinct tokens
        assert all(tokens[t] == tokens[t - period] for t in range(period, 20))  # then repeats
    positions = torch.arange(20)[None, :]
    assert torch.equal(d.repeats, positions >= d.periods[:, None])
    assert len(set(d.tokens[:, 0].tolist())) > 6  # the blocks differ between sequences


def test_repeated_tokens_are_reproducible_sliceable_and_batched():
    a = data.repeated_tokens(50, length=10, vocab_size=8, min_period=2, max_period=5, seed=3)
    b = data.repeated_tokens(50, length=10, vocab_size=8, min_period=2, max_period=5, seed=3)
    c = data.repeated_tokens(50, length=10, vocab_size=8, min_period=2, max_period=5, seed=4)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.periods, b.periods)
    assert not torch.equal(a.tokens, c.tokens)
    part = a[10:20]
    assert isinstance(part, data.RepeatedTokens) and torch.equal(part.tokens, a.tokens[10:20])
    assert torch.equal(part.repeats, a.repeats[10:20])
    sizes = [len(batch) for batch in a.batches(16)]
    assert sizes == [16, 16, 16, 2]
    assert torch.equal(torch.cat([batch.tokens for batch in a.batches(16)]), a.tokens)
    assert a.to("cpu").tokens.device.type == "cpu"
    with pytest.raises(TypeError, match="slice"):
        a[3]


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(max_period=13), ValueError, "max_period=13 needs that many distinct tokens"),
    (dict(length=9), ValueError, "length=9 is too short for max_period=8"),
    (dict(min_period=1), ValueError, "min_period must be >= 2"),
    (dict(min_period=6, max_period=5), ValueError, "max_period must be >= 6"),
    (dict(length=20.0), TypeError, "length must be an int"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
])
def test_repeated_tokens_explain_bad_arguments(kwargs, error, fragment):
    arguments = dict(length=16, vocab_size=12, min_period=3, max_period=8) | kwargs
    with pytest.raises(error, match=fragment):
        data.repeated_tokens(10, **arguments)


# ----- the attention-only transformer -----------------------------------------------------------
def _reference_logits(model, tokens):
    """The model recomputed with torch.nn.MultiheadAttention (weights copied) and torch's LayerNorm."""
    length = tokens.shape[1]
    stream = model.embed(tokens) + model.position.weight[:length]
    future = torch.ones(length, length, dtype=torch.bool).triu(1)  # torch: True = hidden
    for norm, layer in zip(model.norms, model.layers):
        theirs = torch.nn.MultiheadAttention(layer.d_model, layer.num_heads, batch_first=True)
        theirs.load_state_dict(layer.state_dict())
        x = norm(stream)
        stream = stream + theirs(x, x, x, attn_mask=future, need_weights=False)[0]
    return model.unembed(model.final_norm(stream))


@pytest.mark.parametrize("layers, layer_norm", [(1, False), (2, False), (3, True)])
def test_attention_only_transformer_equals_a_torch_reference(layers, layer_norm):
    torch.manual_seed(0)
    model = interpret.AttentionOnlyTransformer(11, 9, 16, 4, layers, layer_norm=layer_norm).eval()
    with torch.no_grad():
        for layer in model.layers:  # non-zero biases, so a forgotten bias cannot pass
            layer.in_proj_bias.normal_()
            layer.out_proj.bias.normal_()
    tokens = torch.randint(0, 11, (3, 7))
    with torch.no_grad():
        logits, weights = model(tokens, return_weights=True)
        torch.testing.assert_close(logits, _reference_logits(model, tokens))
        torch.testing.assert_close(model(tokens), logits)  # the fused path gives the same
    assert logits.shape == (3, 7, 11)
    assert len(weights) == layers and all(w.shape == (3, 4, 7, 7) for w in weights)
    for w in weights:
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 7))
        assert (w.triu(1) == 0).all()  # causal: nothing from the future
    assert isinstance(model.norms[0], torch.nn.LayerNorm) == layer_norm
    assert attnlib.AttentionOnlyTransformer is interpret.AttentionOnlyTransformer


def test_attention_only_transformer_is_causal_and_has_no_mlp():
    torch.manual_seed(1)
    model = interpret.AttentionOnlyTransformer(10, 8, 12, 3, 2).eval()
    tokens = torch.randint(0, 10, (2, 8))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 10
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[:, :5], model(changed)[:, :5])
        assert not torch.allclose(model(tokens)[:, 5:], model(changed)[:, 5:])
    assert not any(isinstance(m, torch.nn.Linear) for name, m in model.named_modules()
                   if name not in ("unembed",) and not name.endswith("out_proj"))


@pytest.mark.parametrize("tokens, error, fragment", [
    (torch.zeros(2, 5), TypeError, "integer (int64) tensor of shape (B, T)"),
    (torch.zeros(5, dtype=torch.long), TypeError, "shape (5,)"),
    (torch.zeros(2, 9, dtype=torch.long), ValueError, "T=9 positions but the model has positions for max_len=8"),
    (torch.full((2, 3), 10), ValueError, "tokens must lie in [0, vocab_size=10)"),
    ([[1, 2]], TypeError, "must be a torch.Tensor"),
])
def test_attention_only_transformer_explains_bad_tokens(tokens, error, fragment):
    model = interpret.AttentionOnlyTransformer(10, 8, 12, 3, 2)
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        model(tokens)


def test_attention_only_transformer_checks_its_arguments():
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        interpret.AttentionOnlyTransformer(10, 8, 12, 3, 0)
    with pytest.raises(TypeError, match="d_model must be an int"):
        interpret.AttentionOnlyTransformer(10, 8, 12.0, 3, 1)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        interpret.AttentionOnlyTransformer(10, 8, 12, 5, 1)
    with pytest.raises(TypeError, match="layer_norm must be True or False"):
        interpret.AttentionOnlyTransformer(10, 8, 12, 3, 1, layer_norm=1)


# ----- scores -------------------------------------------------------------------------------------
def _uniform_causal(batch, heads, length):
    return torch.ones(length, length).tril().div(torch.arange(1, length + 1)[:, None]).expand(batch, heads, -1, -1)


def test_previous_token_score_of_known_patterns():
    length = 6
    previous = torch.zeros(length, length)
    previous[0, 0] = 1.0
    previous[torch.arange(1, length), torch.arange(length - 1)] = 1.0  # every query t >= 1 looks at t - 1
    self_only = torch.eye(length)
    weights = torch.stack([previous, self_only, _uniform_causal(1, 1, length)[0, 0]])[None].expand(4, -1, -1, -1)
    score = interpret.previous_token_score(weights)  # (H,) = (3,)
    expected_uniform = sum(1 / (t + 1) for t in range(1, length)) / (length - 1)
    torch.testing.assert_close(score, torch.tensor([1.0, 0.0, expected_uniform]))


def test_previous_token_score_averages_over_sequences_and_queries():
    torch.manual_seed(0)
    weights = torch.rand(3, 2, 5, 5).softmax(-1)  # (B, H, T, T)
    expected = torch.stack([
        torch.tensor([weights[b, h, t, t - 1] for b in range(3) for t in range(1, 5)]).mean() for h in range(2)])
    torch.testing.assert_close(interpret.previous_token_score(weights), expected)


def test_induction_targets_by_hand():
    tokens = torch.tensor([[5, 7, 9, 5, 7, 5]])
    targets = interpret.induction_targets(tokens)[0]  # (T, T)
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[3, 1] = True  # query 3 (5): key 1 followed the earlier 5 at 0
    expected[4, 2] = True  # query 4 (7): key 2 followed the 7 at 1
    expected[5, 1] = expected[5, 4] = True  # query 5 (5): keys 1 and 4 followed the 5s at 0 and 3
    assert torch.equal(targets, expected)
    assert not interpret.induction_targets(torch.tensor([[4, 4, 4]]))[0, :, 0].any()  # key 0 follows nothing


def test_induction_score_of_known_patterns_on_repeated_tokens():
    d = data.repeated_tokens(8, length=14, vocab_size=20, min_period=3, max_period=6, seed=0)
    targets = interpret.induction_targets(d.tokens).float()  # (B, T, T)
    has = targets.sum(-1, keepdim=True)
    perfect = torch.where(has > 0, targets / has.clamp_min(1), torch.eye(14))  # spread over the targets
    uniform = _uniform_causal(8, 1, 14)[:, 0]
    previous = torch.zeros(14, 14)
    previous[0, 0] = 1.0
    previous[torch.arange(1, 14), torch.arange(13)] = 1.0
    weights = torch.stack([perfect, uniform, previous.expand(8, -1, -1)], dim=1)  # (B, 3, T, T)
    score = interpret.induction_score(weights, d.tokens)
    assert score[0].item() == pytest.approx(1.0)
    assert score[2].item() == pytest.approx(0.0)  # t - 1 never follows an earlier copy of token t (period >= 3)
    chosen = has[..., 0] > 0  # (B, T)
    expected_uniform = (uniform * targets).sum(-1)[chosen].mean()
    assert score[1].item() == pytest.approx(expected_uniform.item())
    assert 0.0 < score[1].item() < 0.5


def test_induction_score_ignores_queries_without_a_target():
    tokens = torch.tensor([[1, 2, 3, 1, 4]])  # only query 3 has a target (key 1)
    weights = torch.zeros(1, 1, 5, 5)
    weights[0, 0, :, 0] = 1.0
    weights[0, 0, 3] = torch.tensor([0.0, 0.75, 0.25, 0.0, 0.0])
    assert interpret.induction_score(weights, tokens).item() == pytest.approx(0.75)


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: interpret.previous_token_score(torch.rand(2, 3, 4)), ValueError, "(B, H, T, T), got shape (2, 3, 4)"),
    (lambda: interpret.previous_token_score(torch.rand(1, 2, 4, 5)), ValueError, "got shape (1, 2, 4, 5)"),
    (lambda: interpret.previous_token_score(torch.ones(1, 1, 3, 3, dtype=torch.long)), TypeError, "floating-point"),
    (lambda: interpret.induction_score(torch.rand(2, 1, 4, 4), torch.zeros(2, 5, dtype=torch.long)), ValueError,
     "tokens must have shape (B, T) = (2, 4)"),
    (lambda: interpret.induction_score(torch.rand(1, 1, 4, 4), torch.tensor([[1, 2, 3, 4]])), ValueError,
     "no token of tokens occurs twice"),
    (lambda: interpret.induction_targets(torch.rand(2, 4)), TypeError, "integer tensor of shape (B, T)"),
])
def test_scores_explain_bad_inputs(call, error, fragment):
    with pytest.raises(error) as caught:
        call()
    assert fragment in str(caught.value)


# ----- ablation -------------------------------------------------------------------------------------
def _layer_without_heads(layer, x, zeroed):
    """A causal MultiHeadAttention with the outputs of heads ``zeroed`` set to zero before W_O, via torch's SDPA."""
    projected = F.linear(x, layer.in_proj_weight, layer.in_proj_bias).chunk(3, -1)  # Q, K, V: (B, T, d_model) each
    q, k, v = (split_heads(t, layer.num_heads) for t in projected)
    heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, d_head)
    keep = torch.ones(layer.num_heads)
    keep[list(zeroed)] = 0.0
    return layer.out_proj(merge_heads(heads * keep[None, :, None, None]))


def test_ablating_a_head_zeroes_its_output_before_the_output_projection():
    torch.manual_seed(0)
    model = interpret.AttentionOnlyTransformer(13, 10, 16, 4, 2).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.out_proj.bias.normal_()
    tokens = torch.randint(0, 13, (3, 10))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        stream = model.embed(tokens) + model.position.weight[:10]
        stream = stream + _layer_without_heads(model.layers[0], stream, [1])
        stream = stream + _layer_without_heads(model.layers[1], stream, [0, 3])
        expected = model.unembed(stream)
        with interpret.ablate_heads(model, [(0, 1), (1, 0), (1, 3)]) as same:
            assert same is model
            torch.testing.assert_close(model(tokens), expected)
        unablated = model(tokens)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name  # restored exactly
    assert not torch.allclose(unablated, expected)


def test_ablating_every_head_leaves_the_direct_path_and_restores_after_an_error():
    torch.manual_seed(1)
    model = interpret.AttentionOnlyTransformer(9, 6, 8, 2, 2).eval()
    tokens = torch.randint(0, 9, (2, 6))
    everything = [(layer, head) for layer in range(2) for head in range(2)]
    with torch.no_grad(), interpret.ablate_heads(model, everything):
        biases = model.layers[0].out_proj.bias + model.layers[1].out_proj.bias  # no head's: they stay
        direct = model.unembed(model.embed(tokens) + model.position.weight[:6] + biases)
        torch.testing.assert_close(model(tokens), direct)
    saved = model.layers[1].out_proj.weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"):
        with interpret.ablate_heads(model, [(1, 1)]):
            assert (model.layers[1].out_proj.weight[:, 4:] == 0).all()
            raise RuntimeError("boom")
    assert torch.equal(model.layers[1].out_proj.weight, saved)


@pytest.mark.parametrize("heads, error, fragment", [
    ([(2, 0)], ValueError, "no head (2, 0): the model has 2 attention layers (0 .. 1) with [2, 2] heads"),
    ([(0, 2)], ValueError, "no head (0, 2)"),
    ([1], TypeError, "(layer, head) pairs of ints, got 1"),
    ([(0, 1.0)], TypeError, "(layer, head) pairs of ints"),
])
def test_ablate_heads_explains_bad_heads(heads, error, fragment):
    model = interpret.AttentionOnlyTransformer(9, 6, 8, 2, 2)
    with pytest.raises(error) as caught:
        with interpret.ablate_heads(model, heads):
            pass
    assert fragment in str(caught.value)
    with pytest.raises(ValueError, match="holds no attnlib.MultiHeadAttention"):
        with interpret.ablate_heads(torch.nn.Linear(2, 2), [(0, 0)]):
            pass


def test_a_tiny_model_learns_to_copy_in_context():
    """A few hundred steps on repeated tokens: the loss on repeats falls far below log V (kept small: ~2 s)."""
    torch.manual_seed(0)
    V, T = 16, 16
    train = data.repeated_tokens(64 * 150, length=T, vocab_size=V, min_period=4, max_period=7, seed=0)
    held = data.repeated_tokens(128, length=T, vocab_size=V, min_period=4, max_period=7, seed=1)
    model = interpret.AttentionOnlyTransformer(V, T, 32, 2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for batch in train.batches(64):
        loss = F.cross_entropy(model(batch.tokens[:, :-1]).flatten(0, 1), batch.tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits, weights = model(held.tokens[:, :-1], return_weights=True)
        losses = F.cross_entropy(logits.transpose(1, 2), held.tokens[:, 1:], reduction="none")  # (B, T-1)
    assert losses[held.repeats[:, :-1]].mean() < 0.25 * math.log(V)
    assert interpret.induction_score(weights[1], held.tokens[:, :-1]).max() > 0.5
