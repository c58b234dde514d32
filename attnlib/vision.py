"""The Vision Transformer (lesson 12): an image as a sequence of patches, read by encoder layers.

Dosovitskiy et al. (2021), "An Image is Worth 16x16 Words", cut an image into ``P × P``
patches, flatten each into a vector of ``C · P · P`` pixels and project it linearly to
``d_model``: the patch embedding, which is a convolution with kernel = stride = P. The
patches, read row by row, are the tokens; a learned [CLS] token is put in front, positions
are added, and a stack of pre-norm encoder layers (lesson 08) lets every patch attend to
every other. The classifier reads the [CLS] token's final state (or the mean over patches):

    tokens = [cls; patchify(x) W_E + b_E] + positions      (B, 1 + N, d_model), N = (H/P)(W/P)
    tokens = EncoderLayer(...)(tokens), num_layers times    (B, 1 + N, d_model)
    logits = Linear(LayerNorm(tokens)[:, 0])                (B, num_classes)

Attention rollout (Abnar & Zuidema, 2020) follows what the [CLS] token read back through the
layers, so that it can be drawn over the image.
"""

from __future__ import annotations

import torch
from torch import nn

from ._validate import require_float, require_tensor
from .layers import EncoderLayer
from .positions import sinusoidal_positional_encoding

POOLS = ("cls", "mean")
POSITIONS = ("learned", "sinusoidal", "none")


# ----- patches --------------------------------------------------------------------------
def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images ``(B, C, H, W)`` into ``(B, N, C·P·P)`` flattened patches, N = (H/P)·(W/P).

    Patches are numbered row by row (patch ``i · W/P + j`` is the one in patch-row i, column
    j); each patch's features are ordered (channel, row, column), the layout of a
    ``Conv2d(C, d, P, stride=P)`` weight, so that ``conv.weight.flatten(1)`` is the matrix of
    the equal linear patch embedding. The same as ``F.unfold(images, P, stride=P).transpose(1, 2)``.
    """
    require_float(require_tensor(images, "images"), "images")
    patch_size = _positive_int(patch_size, "patch_size")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got shape {tuple(images.shape)}")
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"patch_size={patch_size} must divide the image's height and width, got "
                         f"{height}×{width} (shape {tuple(images.shape)})")
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, channels, rows, patch_size, cols, patch_size)  # (B, C, H/P, P, W/P, P)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P): patch position first, its pixels last
    return x.reshape(batch, rows * cols, channels * patch_size * patch_size)  # (B, N, C·P·P)


class PatchEmbedding(nn.Module):
    """``PatchEmbedding(patch_size, in_channels, d_model)``: images ``(B, C, H, W)`` -> tokens ``(B, N, d_model)``.

    :func:`patchify`, then one ``nn.Linear(C·P·P, d_model)`` (``proj``) shared by every patch.
    Equal to ``nn.Conv2d(C, d_model, P, stride=P)`` whose weight is ``proj.weight`` viewed as
    ``(d_model, C, P, P)``, flattened to ``(B, N, d_model)``.
    """

    def __init__(self, patch_size: int, in_channels: int, d_model: int):
        super().__init__()
        self.patch_size = _positive_int(patch_size, "patch_size")
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.d_model = _positive_int(d_model, "d_model")
        self.proj = nn.Linear(in_channels * patch_size * patch_size, d_model)  # W_E: C·P·P -> d_model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        require_tensor(images, "images")
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"images must have shape (B, C, H, W) with C = in_channels = {self.in_channels}, "
                             f"got shape {tuple(images.shape)}")
        return self.proj(patchify(images, self.patch_size))  # (B, N, C·P·P) -> (B, N, d_model)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, in_channels={self.in_channels}, d_model={self.d_model}"


def sinusoidal_2d_positional_encoding(rows: int, cols: int, d_model: int) -> torch.Tensor:
    """Fixed 2-D positions ``(rows · cols, d_model)``: half the features say the row, half the column.

    Patch ``(r, c)`` (row by row, index ``r · cols + c``) gets ``[PE(r) | PE(c)]``, where PE is
    lesson 07's :func:`~attnlib.sinusoidal_positional_encoding` of width ``d_model / 2``.
    ``d_model`` must be a multiple of 4 (each half pairs sines with cosines).
    """
    rows, cols, d_model = (_positive_int(v, n) for v, n in ((rows, "rows"), (cols, "cols"), (d_model, "d_model")))
    if d_model % 4:
        raise ValueError(f"d_model must be a multiple of 4, got {d_model}: half of the features encode the row, "
                         "half the column, and each half pairs sines with cosines")
    row_code = sinusoidal_positional_encoding(rows, d_model // 2)  # (rows, d/2)
    col_code = sinusoidal_positional_encoding(cols, d_model // 2)  # (cols, d/2)
    grid = torch.cat([row_code[:, None].expand(rows, cols, -1), col_code[None].expand(rows, cols, -1)], dim=-1)
    return grid.reshape(rows * cols, d_model)  # (rows·cols, d_model)


# ----- the model ------------------------------------------------------------------------
class VisionTransformer(nn.Module):
    """A ViT classifier built from :class:`PatchEmbedding` and pre-norm GELU :class:`~attnlib.EncoderLayer`\\ s.

    ``VisionTransformer(image_size, patch_size, num_classes, *, in_channels=3, d_model=64,
    num_heads=4, num_layers=2, d_ff=None (4·d_model), dropout=0.0, pool="cls",
    position="learned", mix_patches=True)``; ``image_size`` is an int or ``(H, W)``.

    * ``pool="cls"``: a learned [CLS] token goes in front and the classifier reads its final
      state; ``pool="mean"``: no [CLS] token, the classifier reads the mean over patches;
    * ``position``: ``"learned"`` (one trained vector per token), ``"sinusoidal"``
      (:func:`sinusoidal_2d_positional_encoding`, fixed; the [CLS] token gets none) or
      ``"none"``;
    * ``mix_patches=False``: every token may attend only to itself, so no information passes
      between patches; with mean pooling this is the per-patch control of lesson 12 (a
      per-patch network, then pooling). It needs ``pool="mean"``.

    ``forward(images (B, C, H, W), *, return_weights=False)`` returns logits ``(B, num_classes)``,
    or ``(logits, weights)`` with one ``(B, num_heads, L, L)`` tensor per layer, L = tokens.
    """

    def __init__(self, image_size, patch_size: int, num_classes: int, *, in_channels: int = 3,
                 d_model: int = 64, num_heads: int = 4, num_layers: int = 2, d_ff: int | None = None,
                 dropout: float = 0.0, pool: str = "cls", position: str = "learned", mix_patches: bool = True):
        super().__init__()
        height, width = _image_size(image_size)
        patch_size = _positive_int(patch_size, "patch_size")
        if height % patch_size or width % patch_size:
            raise ValueError(f"patch_size={patch_size} must divide the image size {height}×{width}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
        if not isinstance(mix_patches, bool):
            raise TypeError(f"mix_patches must be True or False, got {mix_patches!r}")
        if not mix_patches and pool == "cls":
            raise ValueError("mix_patches=False with pool='cls' leaves the [CLS] token blind (it may attend only "
                             "to itself); use pool='mean' for the per-patch control")
        num_layers = _positive_int(num_layers, "num_layers", minimum=0)
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.image_size, self.patch_size = (height, width), patch_size
        self.grid = (height // patch_size, width // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.pool, self.position, self.mix_patches = pool, position, mix_patches
        self.patch_embedding = PatchEmbedding(patch_size, in_channels, d_model)
        self.num_tokens = self.num_patches + (pool == "cls")
        self.cls_token = nn.Parameter(torch.randn(1, 1, d_model) * 0.02) if pool == "cls" else None  # (1, 1, d)
        if position == "learned":
            self.positions = nn.Parameter(torch.randn(1, self.num_tokens, d_model) * 0.02)  # (1, L, d)
        elif position == "sinusoidal":
            code = sinusoidal_2d_positional_encoding(*self.grid, d_model)  # (N, d)
            if pool == "cls":
                code = torch.cat([torch.zeros(1, d_model), code])  # (L, d): the [CLS] token has no place
            self.register_buffer("positions", code[None], persistent=False)  # (1, L, d)
        else:
            self.positions = None
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout=dropout, norm_first=True, activation="gelu")
            for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)  # pre-norm layers leave the stream un-normalised: normalise once here
        self.head = nn.Linear(d_model, _positive_int(num_classes, "num_classes"))

    def forward(self, images: torch.Tensor, *, return_weights: bool = False):
        require_float(require_tensor(images, "images"), "images")
        if images.dim() != 4 or tuple(images.shape[2:]) != self.image_size:
            raise ValueError(f"images must have shape (B, C, H, W) with H×W = {self.image_size[0]}×"
                             f"{self.image_size[1]}, got shape {tuple(images.shape)}")
        tokens = self.patch_embedding(images)  # (B, N, d_model)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(len(images), -1, -1), tokens], dim=1)  # (B, 1 + N, d)
        if self.positions is not None:
            tokens = tokens + self.positions  # (B, L, d_model)
        tokens = self.dropout(tokens)  # (B, L, d_model)
        mask = None
        if not self.mix_patches:  # each token may attend to itself only: (1, 1, L, L)
            mask = torch.eye(self.num_tokens, dtype=torch.bool, device=images.device)[None, None]
        weights = []
        for layer in self.layers:
            if return_weights:
                tokens, w = layer(tokens, mask=mask, return_weights=True)  # (B, L, d), (B, H, L, L)
                weights.append(w)
            else:
                tokens = layer(tokens, mask=mask)  # (B, L, d_model)
        tokens = self.norm(tokens)  # (B, L, d_model)
        pooled = tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)  # (B, d_model)
        logits = self.head(pooled)  # (B, num_classes)
        return (logits, weights) if return_weights else logits

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, patch_size={self.patch_size}, tokens={self.num_tokens}, "
                f"pool={self.pool!r}, position={self.position!r}, mix_patches={self.mix_patches}")


def attention_rollout(weights) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each token's final state draws on each input token.

    ``weights``: one ``(B, H, L, L)`` tensor per layer, first layer first (what
    ``VisionTransformer(..., return_weights=True)`` returns). Each layer's heads are averaged,
    the residual connection is counted as attention to oneself, ``A = (W̄ + I) / 2``, and the
    layers are chained: ``rollout = A_last · ... · A_first``, ``(B, L, L)``; every row sums to one.
    Row 0 of a [CLS] model, without its first entry, is a map over the patches.
    """
    if isinstance(weights, torch.Tensor) or not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError("weights must be a non-empty list of (B, H, L, L) tensors, one per layer, "
                        f"got {type(weights).__name__}")
    shape = None
    for index, w in enumerate(weights):
        require_float(require_tensor(w, f"weights[{index}]"), f"weights[{index}]")
        if w.dim() != 4 or w.shape[-1] != w.shape[-2] or (shape is not None and w.shape != shape):
            raise ValueError(f"weights[{index}] must have shape (B, H, L, L) like the others, got "
                             f"{tuple(w.shape)}" + (f" after {tuple(shape)}" if shape is not None else ""))
        shape = w.shape
    eye = torch.eye(shape[-1], dtype=weights[0].dtype, device=weights[0].device)  # (L, L)
    rollout = eye.expand(shape[0], -1, -1)  # (B, L, L)
    for w in weights:
        layer = (w.mean(dim=1) + eye) / 2  # (B, L, L): heads averaged, plus the residual path
        layer = layer / layer.sum(dim=-1, keepdim=True)  # (B, L, L): rows sum to one
        rollout = layer @ rollout  # (B, L, L): this layer after all earlier ones
    return rollout  # (B, L, L)


# ----- checks ---------------------------------------------------------------------------
def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _image_size(image_size) -> tuple[int, int]:
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2:
            raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
        return _positive_int(image_size[0], "image height"), _positive_int(image_size[1], "image width")
    size = _positive_int(image_size, "image_size")
    return size, size
