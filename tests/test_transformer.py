"""attnlib.Transformer: equal to torch.nn.Transformer, masks that hide the future and the padding, the paper's sizes."""

import pytest
import torch
from torch import nn

import attnlib
from attnlib import Transformer, TransformerConfig
from attnlib.data import BOS, PAD

D, H, FF, V = 16, 4, 32, 23


def small(**changes):
    settings = dict(vocab_size=V, d_model=D, num_heads=H, num_encoder_layers=2, num_decoder_layers=3, d_ff=FF,
                    dropout=0.0, max_length=32)
    return TransformerConfig(**{**settings, **changes})


def tokens(lengths, width, seed=0, low=3, high=V):
    """(B, width) token ids with PAD after each row's length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, high, (len(lengths), width), generator=g)  # (B, width)
    real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # (B, width)
    return ids.masked_fill(~real, PAD)


def pair(norm_first=False, activation="relu", encoder_layers=2, decoder_layers=3, seed=0):
    torch.manual_seed(seed)
    theirs = nn.Transformer(D, H, encoder_layers, decoder_layers, FF, dropout=0.0, activation=activation,
                            batch_first=True, norm_first=norm_first)
    ours = Transformer(small(norm_first=norm_first, activation=activation, num_encoder_layers=encoder_layers,
                             num_decoder_layers=decoder_layers))
    result = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert result.unexpected_keys == []  # every one of torch's parameters has its place in ours
    assert sorted(result.missing_keys) == ["source_embedding.weight", "target_embedding.weight"]  # ours alone
    return ours, theirs


# ----- equal to torch.nn.Transformer ----------------------------------------------------------
@pytest.mark.parametrize("norm_first, activation, encoder_layers, decoder_layers",
                         [(False, "relu", 2, 3), (False, "relu", 1, 1), (True, "gelu", 2, 2), (False, "gelu", 3, 1)])
# torch's own note that its nested-tensor fast path is off for pre-norm layers: about the reference, not ours.
@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")
def test_the_stacks_equal_torch_nn_transformer_with_masks(norm_first, activation, encoder_layers, decoder_layers):
    ours, theirs = pair(norm_first, activation, encoder_layers, decoder_layers)
    g = torch.Generator().manual_seed(1)
    source = torch.randn(3, 7, D, generator=g, requires_grad=True)  # (B, S, d): grad on, so torch takes its
    target = torch.randn(3, 5, D, generator=g, requires_grad=True)  # (B, T, d)   standard path (no nested tensors)
    source_real = torch.arange(7)[None, :] < torch.tensor([7, 3, 5])[:, None]  # (B, S)
    target_real = torch.arange(5)[None, :] < torch.tensor([5, 5, 2])[:, None]  # (B, T)
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)  # (T, T): torch's True = hidden, above the diagonal
    expected = theirs(source, target, tgt_mask=future, tgt_is_causal=True, src_key_padding_mask=~source_real,
                      tgt_key_padding_mask=~target_real, memory_key_padding_mask=~source_real)
    source_mask = source_real[:, None, None, :]  # (B, 1, 1, S): True = may attend
    target_mask = target_real[:, None, None, :] & attnlib.causal_mask(5)  # (B, 1, T, T)
    got = ours.decoder(target, ours.encoder(source, source_mask), target_mask, source_mask)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), source)[0],
                               torch.autograd.grad(expected.sum(), source)[0])


def test_the_whole_model_is_embeddings_positions_the_stacks_and_the_shared_projection():
    ours, theirs = pair()
    source, target_input = tokens([7, 4, 6], 7), tokens([5, 2, 4], 5, seed=1)
    target_input[:, 0] = BOS
    E = ours.source_embedding.weight  # (V, d): shared by both embeddings and the output
    scale, positions = D**0.5, attnlib.sinusoidal_positional_encoding(32, D)  # (32, d)
    with torch.no_grad():
        expected = theirs(E[source] * scale + positions[:7], E[target_input] * scale + positions[:5],
                          tgt_mask=torch.ones(5, 5, dtype=torch.bool).triu(1),
                          src_key_padding_mask=source == PAD, tgt_key_padding_mask=target_input == PAD,
                          memory_key_padding_mask=source == PAD) @ E.T  # (B, T, V)
        got = ours.eval()(source, target_input)  # (B, T, V)
    real = target_input != PAD  # torch's fast path may fill padded rows differently
    torch.testing.assert_close(got[real], expected[real])


# ----- masks ------------------------------------------------------------------------------------
def test_padding_and_target_masks():
    ids = torch.tensor([[5, 6, 7, PAD], [BOS, 4, PAD, PAD]])
    assert attnlib.padding_mask(ids).tolist() == [[[[True, True, True, False]]], [[[True, True, False, False]]]]
    mask = attnlib.target_mask(ids)  # (B, 1, T, T)
    assert mask.shape == (2, 1, 4, 4) and mask.dtype == torch.bool
    expected = torch.ones(4, 4, dtype=torch.bool).tril() & (ids != PAD)[:, None, None, :]
    assert torch.equal(mask, expected)
    assert mask.any(dim=-1).all()  # no query is left with nothing to attend to
    with pytest.raises(TypeError, match="integer token ids"):
        attnlib.target_mask(ids.float())
    with pytest.raises(ValueError, match=r"shape \(B, L\)"):
        attnlib.padding_mask(ids[0])


def test_no_target_position_sees_the_future():
    model = Transformer(small()).eval()
    source, target_input = tokens([6, 6], 6), tokens([6, 6], 6, seed=2)
    with torch.no_grad():
        logits = model(source, target_input)  # (B, T, V)
        for j in range(1, 6):
            changed = target_input.clone()
            changed[:, j:] = (changed[:, j:] + 1 - 3) % (V - 3) + 3  # new tokens from position j on
            after = model(source, changed)
            torch.testing.assert_close(after[:, :j], logits[:, :j])  # positions before j: untouched
            assert (after[:, j] - logits[:, j]).abs().max() > 1e-3  # position j reads its own input


def test_source_padding_changes_nothing():
    model = Transformer(small()).eval()
    source, target_input = tokens([5, 3], 5), tokens([4, 4], 4, seed=3)
    with torch.no_grad():
        logits = model(source, target_input)
        longer = torch.cat([source, torch.full((2, 4), PAD)], dim=1)  # four more padding positions
        torch.testing.assert_close(model(longer, target_input), logits)
        memory = model.encode(source)  # (B, S, d)
        noisy = memory.clone()
        noisy[1, 3:] = torch.randn(2, D) * 100  # what sits at sentence 1's padding
        mask = attnlib.padding_mask(source)
        torch.testing.assert_close(model.decode(target_input, noisy, mask), model.decode(target_input, memory, mask))
        assert (model.decode(target_input, noisy, None) - logits).abs().max() > 1e-3  # without the mask it would
        torch.testing.assert_close(model(source, torch.cat([target_input, torch.full((2, 3), PAD)], 1))[:, :4],
                                   logits)  # target padding at the end changes nothing before it


def test_returned_weights_respect_the_masks():
    model = Transformer(small()).eval()
    source, target_input = tokens([6, 2], 6), tokens([5, 3], 5, seed=4)
    with torch.no_grad():
        logits, weights = model(source, target_input, return_weights=True)
    torch.testing.assert_close(logits, model(source, target_input))
    assert [w.shape for w in weights["encoder"]] == [(2, H, 6, 6)] * 2
    assert [w.shape for w in weights["decoder"]] == [(2, H, 5, 5)] * 3
    assert [w.shape for w in weights["cross"]] == [(2, H, 5, 6)] * 3
    for w in weights["cross"] + weights["encoder"]:
        assert (w[1, ..., 2:] == 0).all()  # sentence 1 has two real source tokens
        torch.testing.assert_close(w.sum(-1)[0], torch.ones_like(w.sum(-1)[0]))
    for w in weights["decoder"]:
        assert (w.triu(1) == 0).all() and (w[1, :, :, 3:] == 0).all()


# ----- the paper's sizes ----------------------------------------------------------------------------
def layer_counts(d, d_ff, vocab, n=6):
    attention = 4 * d * d + 4 * d
    ffn = 2 * d * d_ff + d_ff + d
    encoder = n * (attention + ffn + 2 * 2 * d) + 2 * d  # + final LayerNorm
    decoder = n * (2 * attention + ffn + 3 * 2 * d) + 2 * d
    return encoder + decoder + vocab * d  # one shared embedding matrix


def test_base_and_big_have_the_papers_settings_and_parameter_counts():
    with torch.device("meta"):  # shapes only: no memory is spent on 63 M numbers
        base, big = Transformer.base(), Transformer.big()
    c = base.config
    assert (c.d_model, c.num_heads, c.num_encoder_layers, c.num_decoder_layers, c.d_ff, c.dropout) == (
        512, 8, 6, 6, 2048, 0.1)
    assert c.share_embeddings and not c.norm_first and c.activation == "relu" and c.vocab_size == 37_000
    assert (big.config.d_model, big.config.num_heads, big.config.d_ff, big.config.dropout) == (1024, 16, 4096, 0.3)
    assert all(p.is_meta for p in base.parameters())
    for model, d, d_ff in ((base, 512, 2048), (big, 1024, 4096)):
        assert sum(p.numel() for p in model.parameters()) == layer_counts(d, d_ff, 37_000)
    assert sum(p.numel() for p in base.parameters()) == 63_084_544  # the paper says 65 M
    assert base.source_embedding.weight is base.target_embedding.weight


def test_unshared_embeddings_have_their_own_matrices():
    model = Transformer(small(share_embeddings=False, target_vocab_size=11))
    assert model.target_embedding.weight.shape == (11, D) and model.output.weight.shape == (11, D)
    shared = Transformer(small())
    assert (sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in shared.parameters())
            == 2 * 11 * D)  # a target embedding and an output projection of their own
    logits = model(tokens([4], 4), torch.tensor([[BOS, 4, 5]]))
    assert logits.shape == (1, 3, 11)


def test_dropout_only_in_training_and_every_parameter_learns():
    model = Transformer(small(dropout=0.3))
    source, target_input = tokens([5, 4], 5), tokens([4, 4], 4, seed=5)
    model.train()
    assert not torch.allclose(model(source, target_input), model(source, target_input))
    model(source, target_input).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    torch.testing.assert_close(model(source, target_input), model(source, target_input))


# ----- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, error, message", [
    (dict(num_heads=5), ValueError, "not divisible by num_heads"),
    (dict(d_model=0), ValueError, "d_model must be >= 1"),
    (dict(d_model=15, num_heads=5), ValueError, "even"),
    (dict(num_encoder_layers=2.0), TypeError, "num_encoder_layers must be an int"),
    (dict(target_vocab_size=9), ValueError, "share_embeddings=True needs one vocabulary"),
    (dict(pad_id=V), ValueError, "pad_id"),
    (dict(dropout=1.5), ValueError, "dropout"),
    (dict(activation="tanh"), ValueError, "activation"),
])
def test_bad_configurations_are_explained(changes, error, message):
    with pytest.raises(error, match=message):
        Transformer(small(**changes))


def test_bad_inputs_are_explained():
    model = Transformer(small())
    source, target_input = tokens([3], 3), torch.tensor([[BOS, 4]])
    with pytest.raises(TypeError, match="integer token ids"):
        model(source.float(), target_input)
    with pytest.raises(ValueError, match=r"shape \(B, L\)"):
        model(source[0], target_input)
    with pytest.raises(ValueError, match=r"outside \[0, 23\)"):
        model(source + V, target_input)
    with pytest.raises(ValueError, match="must share B"):
        model(source.repeat(2, 1), target_input)
    with pytest.raises(ValueError, match="max_length=32"):
        model(tokens([40], 40), target_input)
    with pytest.raises(ValueError, match=r"memory must have shape \(B, S, d_model\)"):
        model.decode(target_input, torch.zeros(1, 3, D + 1), None)
    with pytest.raises(TypeError, match="TransformerConfig"):
        Transformer({"vocab_size": 10})
