"""attnlib.vision: patches, the patch embedding, 2-D positions, the Vision Transformer and attention rollout."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnlib
from attnlib.vision import attention_rollout, patchify, sinusoidal_2d_positional_encoding


# ----- patches and the patch embedding -------------------------------------------------------
@pytest.mark.parametrize("shape, patch", [((2, 3, 8, 12), 4), ((1, 1, 6, 6), 3), ((3, 2, 4, 4), 1), ((2, 3, 8, 8), 8)])
def test_patchify_equals_torch_unfold(shape, patch):
    x = torch.randn(*shape)
    torch.testing.assert_close(patchify(x, patch), F.unfold(x, patch, stride=patch).transpose(1, 2))


def test_patchify_numbers_patches_row_by_row_with_channel_major_features():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)  # (B, C, H, W)
    patches = patchify(x, 2)  # (1, 6, 8): a 2×3 grid of patches
    assert patches.shape == (1, 6, 8)
    torch.testing.assert_close(patches[0, 4], x[0, :, 2:4, 2:4].flatten())  # patch-row 1, column 1
    torch.testing.assert_close(patches[0, 2], x[0, :, 0:2, 4:6].flatten())  # patch-row 0, column 2


@pytest.mark.parametrize("channels, patch, d_model", [(3, 4, 16), (1, 2, 5), (2, 8, 8)])
def test_patch_embedding_equals_a_strided_conv_with_copied_weights(channels, patch, d_model):
    torch.manual_seed(0)
    embed = attnlib.PatchEmbedding(patch, channels, d_model)
    conv = nn.Conv2d(channels, d_model, patch, stride=patch)
    with torch.no_grad():
        conv.weight.copy_(embed.proj.weight.view(d_model, channels, patch, patch))
        conv.bias.copy_(embed.proj.bias)
    x = torch.randn(2, channels, 2 * patch, 3 * patch)
    torch.testing.assert_close(embed(x), conv(x).flatten(2).transpose(1, 2))  # (B, N, d_model)


@pytest.mark.parametrize("call, error, message", [
    (lambda: patchify(torch.randn(2, 3, 8, 10), 4), ValueError, "must divide the image's height and width, got 8×10"),
    (lambda: patchify(torch.randn(3, 8, 8), 4), ValueError, "(B, C, H, W), got shape (3, 8, 8)"),
    (lambda: patchify(torch.ones(1, 1, 4, 4, dtype=torch.long), 2), TypeError, "floating-point"),
    (lambda: patchify([[1.0]], 2), TypeError, "torch.Tensor, got list"),
    (lambda: patchify(torch.randn(1, 1, 4, 4), 0), ValueError, "patch_size must be >= 1"),
    (lambda: patchify(torch.randn(1, 1, 4, 4), 2.0), TypeError, "patch_size must be an int"),
    (lambda: attnlib.PatchEmbedding(4, 3, 8)(torch.randn(2, 1, 8, 8)), ValueError, "C = in_channels = 3"),
])
def test_patch_errors_name_the_problem(call, error, message):
    with pytest.raises(error) as caught:
        call()
    assert message in str(caught.value)


# ----- 2-D positions -------------------------------------------------------------------------
def test_2d_sinusoidal_positions_are_row_code_then_column_code():
    code = sinusoidal_2d_positional_encoding(3, 5, 16)  # (15, 16)
    one_d = attnlib.sinusoidal_positional_encoding(5, 8)  # (5, 8)
    assert code.shape == (15, 16)
    for r in range(3):
        for c in range(5):
            torch.testing.assert_close(code[r * 5 + c], torch.cat([one_d[r], one_d[c]]))
    assert len({tuple(row.tolist()) for row in code}) == 15  # every patch gets its own code


@pytest.mark.parametrize("args, message", [((2, 2, 6), "multiple of 4, got 6"), ((0, 2, 8), "rows must be >= 1")])
def test_2d_positions_reject_bad_sizes(args, message):
    with pytest.raises(ValueError, match=message):
        sinusoidal_2d_positional_encoding(*args)


# ----- the Vision Transformer ----------------------------------------------------------------
def _vit(**kwargs):
    torch.manual_seed(0)
    settings = dict(d_model=16, num_heads=2, num_layers=2, d_ff=32)
    return attnlib.VisionTransformer(8, 2, 3, **{**settings, **kwargs}).eval()


@pytest.mark.parametrize("pool, position, tokens", [("cls", "learned", 17), ("mean", "learned", 16),
                                                    ("cls", "sinusoidal", 17), ("mean", "none", 16)])
def test_vit_shapes_and_weights(pool, position, tokens):
    model = _vit(pool=pool, position=position)
    x = torch.rand(4, 3, 8, 8)
    logits, weights = model(x, return_weights=True)
    assert logits.shape == (4, 3) and model.num_tokens == tokens
    assert len(weights) == 2 and all(w.shape == (4, 2, tokens, tokens) for w in weights)
    torch.testing.assert_close(model(x), logits)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(4, 2, tokens))


def test_vit_is_patch_embedding_cls_positions_encoder_layers_norm_and_head():
    model = _vit()
    x = torch.rand(3, 3, 8, 8)
    tokens = torch.cat([model.cls_token.expand(3, -1, -1), model.patch_embedding(x)], dim=1) + model.positions
    for layer in model.layers:
        assert isinstance(layer, attnlib.EncoderLayer) and layer.norm_first and layer.activation_name == "gelu"
        tokens = layer(tokens)
    torch.testing.assert_close(model(x), model.head(model.norm(tokens)[:, 0]))


def test_vit_parameter_count_of_vit_b16_is_the_papers():
    with torch.device("meta"):
        model = attnlib.VisionTransformer(224, 16, 1000, d_model=768, num_heads=12, num_layers=12)
    assert model.num_tokens == 197  # 14 × 14 patches and [CLS]
    assert sum(p.numel() for p in model.parameters()) == 86_567_656  # "86M" in Dosovitskiy et al.


def test_without_positions_the_mean_pooled_vit_ignores_where_patches_are():
    model = _vit(pool="mean", position="none")
    x = torch.rand(2, 3, 8, 8)
    patches = x.reshape(2, 3, 4, 2, 4, 2)  # move whole patches: swap patch-rows 0 and 3, columns 1 and 2
    shuffled = patches[:, :, [3, 1, 2, 0]][:, :, :, :, [0, 2, 1, 3]].reshape(2, 3, 8, 8)
    torch.testing.assert_close(model(shuffled), model(x))
    assert not torch.allclose(_vit(pool="mean")(shuffled), _vit(pool="mean")(x))  # learned positions: it does not


def test_without_mixing_every_patch_is_scored_on_its_own():
    """mix_patches=False: the logits are a sum over patches, so two patches' effects add up exactly."""
    torch.manual_seed(1)
    model = _vit(pool="mean", mix_patches=False)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    base = torch.zeros(1, 3, 8, 8)
    a, b = base.clone(), base.clone()
    a[..., 0:2, 0:2] = torch.rand(3, 2, 2)  # something in patch 0
    b[..., 6:8, 4:6] = torch.rand(3, 2, 2)  # something in patch 14
    both = a + b
    with torch.no_grad():
        torch.testing.assert_close(model(both) + model(base), model(a) + model(b))
        mixing = _vit(pool="mean")
        assert not torch.allclose(mixing(both) + mixing(base), mixing(a) + mixing(b), atol=1e-4)
        _, weights = model(both, return_weights=True)
    torch.testing.assert_close(weights[0], torch.eye(16).expand(1, 2, 16, 16))


def test_vit_trains_on_the_same_colour_task():
    torch.manual_seed(0)
    dataset = attnlib.data.same_colour_task(256, grid=3, cell_size=2, object_size=2, num_colours=2, seed=0)
    model = attnlib.VisionTransformer(6, 2, 2, d_model=16, num_heads=2, num_layers=1, d_ff=32)
    loss = lambda m, batch: F.cross_entropy(m(batch[0]), batch[1])  # noqa: E731
    history = attnlib.train.fit(model, dataset.epochs(64), loss, optimizer=torch.optim.Adam(model.parameters(), 3e-3),
                                max_steps=30, progress=False)
    assert history.losses[-1] < history.losses[0]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(image_size=10), ValueError, "patch_size=4 must divide the image size 10×10"),
    (dict(image_size=(8, 8, 3)), ValueError, "an int or (height, width)"),
    (dict(pool="max"), ValueError, "pool must be one of ('cls', 'mean')"),
    (dict(position="rotary"), ValueError, "position must be one of"),
    (dict(mix_patches=False), ValueError, "[CLS] token blind"),
    (dict(mix_patches=0), TypeError, "mix_patches must be True or False"),
    (dict(num_classes=0), ValueError, "num_classes must be >= 1"),
    (dict(position="sinusoidal", d_model=18, num_heads=2), ValueError, "multiple of 4, got 18"),
])
def test_vit_construction_errors(kwargs, error, message):
    settings = {"image_size": 8, "patch_size": 4, "num_classes": 2, "d_model": 16, "num_heads": 2, **kwargs}
    with pytest.raises(error) as caught:
        attnlib.VisionTransformer(settings.pop("image_size"), settings.pop("patch_size"), settings.pop("num_classes"),
                                  **settings)
    assert message in str(caught.value)


def test_vit_rejects_images_of_another_size():
    with pytest.raises(ValueError, match=r"H×W = 8×8, got shape \(2, 3, 16, 16\)"):
        _vit()(torch.rand(2, 3, 16, 16))


# ----- attention rollout ---------------------------------------------------------------------
def test_rollout_of_one_layer_is_half_attention_half_residual():
    w = torch.softmax(torch.randn(2, 3, 5, 5), dim=-1)  # (B, H, L, L)
    torch.testing.assert_close(attention_rollout([w]), (w.mean(1) + torch.eye(5)) / 2)


def test_rollout_chains_the_layers_last_layer_on_the_left():
    torch.manual_seed(0)
    layers = [torch.softmax(torch.randn(2, 2, 4, 4), dim=-1) for _ in range(3)]
    per_layer = [(w.mean(1) + torch.eye(4)) / 2 for w in layers]
    expected = per_layer[2] @ per_layer[1] @ per_layer[0]
    rollout = attention_rollout(layers)
    torch.testing.assert_close(rollout, expected)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 4))


def test_rollout_follows_a_token_that_copies_another():
    """Layer 1: token 0 reads token 2 only; layer 0: token 2 reads token 1 only. Rollout traces 0 back to 1 and 2."""
    eye = torch.eye(3)
    first = eye.clone()
    first[2] = torch.tensor([0.0, 1.0, 0.0])
    second = eye.clone()
    second[0] = torch.tensor([0.0, 0.0, 1.0])
    rollout = attention_rollout([first[None, None], second[None, None]])[0]  # (3, 3)
    torch.testing.assert_close(rollout[0], torch.tensor([0.5, 0.25, 0.25]))


@pytest.mark.parametrize("weights, error, message", [
    (torch.rand(1, 1, 3, 3), TypeError, "a non-empty list"),
    ([], TypeError, "a non-empty list"),
    ([torch.rand(1, 3, 3)], ValueError, "weights[0] must have shape (B, H, L, L)"),
    ([torch.rand(1, 1, 3, 3), torch.rand(1, 1, 4, 4)], ValueError, "weights[1] must have shape"),
    ([torch.ones(1, 1, 3, 3, dtype=torch.long)], TypeError, "floating-point"),
])
def test_rollout_errors(weights, error, message):
    with pytest.raises(error) as caught:
        attention_rollout(weights)
    assert message in str(caught.value)
