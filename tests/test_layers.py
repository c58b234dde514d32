"""attnlib's encoder and decoder layers equal torch's, for both norm placements, with masks."""

import pytest
import torch
from torch import nn

import attnlib

D, H, FF = 16, 4, 32


def encoder_pair(norm_first, activation="relu", seed=0):
    torch.manual_seed(seed)
    theirs = nn.TransformerEncoderLayer(D, H, FF, dropout=0.1, activation=activation, batch_first=True,
                                        norm_first=norm_first).eval()
    ours = attnlib.EncoderLayer(D, H, FF, dropout=0.1, activation=activation, norm_first=norm_first).eval()
    ours.load_state_dict(theirs.state_dict())  # the same parameter names
    return ours, theirs


def decoder_pair(norm_first, seed=0):
    torch.manual_seed(seed)
    theirs = nn.TransformerDecoderLayer(D, H, FF, dropout=0.1, batch_first=True, norm_first=norm_first).eval()
    ours = attnlib.DecoderLayer(D, H, FF, dropout=0.1, norm_first=norm_first).eval()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def stream(batch=3, length=6, seed=1):
    return torch.randn(batch, length, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_equals_torch(norm_first, activation):
    ours, theirs = encoder_pair(norm_first, activation)
    x = stream()
    real = torch.arange(6)[None, :] < torch.tensor([6, 4, 1])[:, None]  # (B, L), True = real token
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
        expected = theirs(x, src_key_padding_mask=~real)  # torch: True = padding
        got = ours(x, mask=real[:, None, None, :])  # attnlib: (B, 1, 1, L), True = may attend
        torch.testing.assert_close(got[real], expected[real])  # torch's fast path may zero padded rows
        future = torch.ones(6, 6, dtype=torch.bool).triu(1)
        torch.testing.assert_close(ours(x, causal=True), theirs(x, src_mask=future, is_causal=True))


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_equals_torch(norm_first):
    ours, theirs = decoder_pair(norm_first)
    target, memory = stream(length=5), stream(length=7, seed=2)
    source_real = torch.arange(7)[None, :] < torch.tensor([7, 3, 5])[:, None]  # (B, S)
    target_real = torch.arange(5)[None, :] < torch.tensor([5, 5, 2])[:, None]  # (B, T)
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)
    with torch.no_grad():
        expected = theirs(target, memory, tgt_mask=future, tgt_is_causal=True,
                          tgt_key_padding_mask=~target_real, memory_key_padding_mask=~source_real)
        got = ours(target, memory, mask=target_real[:, None, None, :], memory_mask=source_real[:, None, None, :])
        torch.testing.assert_close(got, expected)
        got, self_weights, cross_weights = ours(target, memory, memory_mask=source_real[:, None, None, :],
                                                return_weights=True)
    assert self_weights.shape == (3, H, 5, 5) and cross_weights.shape == (3, H, 5, 7)
    assert (self_weights.triu(1) == 0).all() and (cross_weights[1, ..., 3:] == 0).all()


def test_decoder_without_causal_mask_sees_the_future():
    ours, _ = decoder_pair(False)
    target, memory = stream(length=5), stream(length=7, seed=2)
    changed = target.clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        causal_shift = (ours(changed, memory) - ours(target, memory))[:, :-1].abs().max()
        open_shift = (ours(changed, memory, causal=False) - ours(target, memory, causal=False))[:, :-1].abs().max()
    assert causal_shift < 1e-6 < open_shift


def test_the_block_adds_to_the_residual_stream_in_pre_norm():
    """Pre-norm: output = x + (something); zero the sublayers' output projections and x passes through."""
    ours, _ = encoder_pair(norm_first=True)
    with torch.no_grad():
        ours.self_attn.out_proj.weight.zero_(), ours.self_attn.out_proj.bias.zero_()
        ours.linear2.weight.zero_(), ours.linear2.bias.zero_()
        x = stream()
        torch.testing.assert_close(ours(x), x)


def test_gradients_equal_torch_in_training_mode_without_dropout():
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=True)
    ours = attnlib.EncoderLayer(D, H, FF, dropout=0.0, norm_first=True)
    ours.load_state_dict(theirs.state_dict())
    x = stream()
    ours(x, causal=True).square().sum().backward()
    theirs(x, src_mask=torch.ones(6, 6, dtype=torch.bool).triu(1), is_causal=True).square().sum().backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="activation must be one of"):
        attnlib.EncoderLayer(D, H, FF, activation="tanh")
    with pytest.raises(ValueError, match="d_ff must be a positive int"):
        attnlib.DecoderLayer(D, H, 0)
    with pytest.raises(ValueError, match="d_model=16 is not divisible by num_heads=3"):
        attnlib.EncoderLayer(D, 3, FF)
    with pytest.raises(ValueError, match=r"query must have shape \(B, Lq, d_model\) with d_model=16"):
        attnlib.EncoderLayer(D, H, FF)(torch.randn(2, 3, 8))
