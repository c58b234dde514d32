"""Positional encodings (lesson 07): telling a permutation-blind layer where each token is.

Self-attention treats its input as a set: permute the tokens and the outputs permute the
same way (lesson 05). Word order has to enter some other way. The Transformer paper adds
a fixed pattern of sines and cosines to the token embeddings:

    PE[p, 2i]     = sin(p / 10000^(2i / d_model))
    PE[p, 2i + 1] = cos(p / 10000^(2i / d_model))

Each pair of features (2i, 2i+1) is a point on a circle that turns at its own frequency as
the position p grows, from one turn every 2π positions (i = 0) to one every 10000·2π.
BERT and GPT-2 learn their position vectors instead, one per position up to a maximum
length: :class:`LearnedPositionalEmbedding`, which says what it does past that length.

Two later designs act inside attention instead of on the embeddings, and
``attnlib.MultiHeadAttention(..., positions="rope" | "alibi")`` applies them:

* **rotary positions** (RoPE, Su et al. 2021), :func:`apply_rope`: rotate each feature pair
  of the queries and keys by the angle ``p · θ_i``, with the sinusoidal frequencies
  ``θ_i = 10000^(-2i/d)``. A rotation keeps lengths, and the score of a query at position m
  with a key at position n then depends on m − n only;
* **ALiBi** (Press et al. 2022), :func:`alibi_slopes` and :func:`alibi_bias`: no position
  vectors at all; each head subtracts ``slope_h · |m − n|`` from its scores, so far-away
  keys count less, each head with its own slope.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_BEYOND = ("error", "clamp")


def sinusoidal_positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """The Transformer's fixed positional encoding, ``(max_len, d_model)`` float32.

    Row p encodes position p: ``PE[p, 2i] = sin(p / 10000^(2i/d_model))`` and
    ``PE[p, 2i+1] = cos(p / 10000^(2i/d_model))``. ``d_model`` must be even, since the
    features come in (sin, cos) pairs.
    """
    for name, value, minimum in (("max_len", max_len, 0), ("d_model", d_model, 2)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if d_model % 2:
        raise ValueError(
            f"d_model must be even, got {d_model}: the encoding pairs feature 2i (a sine) with "
            "feature 2i + 1 (a cosine of the same frequency)"
        )
    positions = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model / 2,): 0, 2, 4, ...
    frequencies = torch.exp(-math.log(10000.0) * two_i / d_model)  # (d_model / 2,) = 1 / 10000^(2i/d)
    angles = positions * frequencies  # (max_len, d_model / 2)
    encoding = torch.empty(max_len, d_model, dtype=torch.float64)  # (max_len, d_model)
    encoding[:, 0::2] = torch.sin(angles)  # even features: sines
    encoding[:, 1::2] = torch.cos(angles)  # odd features: cosines of the same angles
    return encoding.float()  # (max_len, d_model)


class LearnedPositionalEmbedding(nn.Module):
    """Learned absolute positions (BERT, GPT-2): one trained vector per position, ``weight`` ``(max_len, d_model)``.

    ``LearnedPositionalEmbedding(max_len, d_model, *, beyond="error")``; ``forward(length, *, offset=0)``
    returns the rows of positions ``offset .. offset + length - 1``, ``(length, d_model)``, to add to the
    token embeddings ``(B, length, d_model)``. The weights start like ``nn.Embedding``'s, from N(0, 1).

    A table has no row for a position it was not built with, so ``beyond`` says what happens at
    positions ``>= max_len``: ``"error"`` (the default) raises a ValueError; ``"clamp"`` gives every
    such position the last row, ``max_len - 1``, so the model runs on longer inputs but cannot tell
    those positions apart (lesson 07 measures what that costs).
    """

    def __init__(self, max_len: int, d_model: int, *, beyond: str = "error"):
        super().__init__()
        for name, value in (("max_len", max_len), ("d_model", d_model)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if beyond not in _BEYOND:
            raise ValueError(f"beyond must be one of {_BEYOND} (what to do at positions >= max_len), got {beyond!r}")
        self.max_len, self.d_model, self.beyond = max_len, d_model, beyond
        self.weight = nn.Parameter(torch.empty(max_len, d_model))  # (max_len, d_model): row p = position p
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)  # N(0, 1), as nn.Embedding

    def forward(self, length: int, *, offset: int = 0) -> torch.Tensor:
        """The vectors of positions ``offset .. offset + length - 1``: ``(length, d_model)``."""
        for name, value in (("length", length), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        last = offset + length - 1  # the largest position asked for
        if self.beyond == "error" and last >= self.max_len:
            raise ValueError(
                f"positions up to {last} were asked for, but the table has rows for positions 0 .. "
                f"{self.max_len - 1} only (max_len={self.max_len}); build it with a larger max_len, or pass "
                "beyond='clamp' to give later positions the last row"
            )
        positions = torch.arange(offset, offset + length, device=self.weight.device)  # (length,)
        return self.weight[positions.clamp(max=self.max_len - 1)]  # (length, d_model)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}, beyond={self.beyond!r}"


def apply_rope(x: torch.Tensor, *, offset: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotary positions: rotate feature pair (2i, 2i+1) of row p of ``x`` by the angle ``(offset + p) · θ_i``.

    ``x`` ``(..., L, d)`` with ``d`` even (queries or keys, one head's features last) →
    the same shape and dtype. ``θ_i = base^(-2i/d)``: the sinusoidal encoding's
    frequencies. ``offset`` is the position of row 0 (the tokens already in a KV cache).
    The rotation is computed in float32 and keeps every pair's length.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if x.dim() < 2 or x.shape[-1] % 2:
        raise ValueError(f"x must have shape (..., L, d) with an even d (features rotate in pairs), "
                         f"got shape {tuple(x.shape)}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, got {offset!r}")
    length, d = x.shape[-2], x.shape[-1]
    positions = torch.arange(offset, offset + length, device=x.device, dtype=torch.float32)  # (L,)
    frequencies = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # (d/2,) = θ_i
    angles = positions[:, None] * frequencies  # (L, d/2)
    cos, sin = angles.cos(), angles.sin()  # (L, d/2) each
    pairs = x.float().unflatten(-1, (d // 2, 2))  # (..., L, d/2, 2): (x_2i, x_2i+1)
    even, odd = pairs[..., 0], pairs[..., 1]  # (..., L, d/2) each
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)  # (..., L, d/2, 2)
    return rotated.flatten(-2).to(x.dtype)  # (..., L, d)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi's slope per head, ``(num_heads,)`` float32: a geometric sequence that starts at 2^(-8/n).

    For a power of two n the slopes are ``2^(-8h/n)``, h = 1 .. n (8 heads: 1/2, 1/4, ...,
    1/256). Otherwise the paper takes the n' = largest power of two below n, its n' slopes,
    and then every other slope of the sequence for 2n' until there are n.
    """
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be an int >= 1, got {num_heads!r}")

    def powers_of_two_slopes(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    below = 2 ** int(math.floor(math.log2(num_heads)))  # the largest power of two <= num_heads
    slopes = powers_of_two_slopes(below) + powers_of_two_slopes(2 * below)[0::2][: num_heads - below]
    return torch.tensor(slopes, dtype=torch.float32)  # (num_heads,)


def alibi_bias(num_heads: int, len_q: int, len_k: int, *, offset: int = 0, device=None) -> torch.Tensor:
    """ALiBi's score bias ``(num_heads, len_q, len_k)``: ``-slope_h · |(offset + i) - j|``.

    Query i sits at position ``offset + i`` (``offset``: tokens already in a KV cache), key j
    at position j. A causal model never sees ``j > offset + i``, so there this is the paper's
    ``-slope · (i - j)``; without a mask the penalty is symmetric in the distance.
    """
    for name, value in (("len_q", len_q), ("len_k", len_k), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    slopes = alibi_slopes(num_heads).to(device)  # (H,)
    query_positions = torch.arange(offset, offset + len_q, device=device)  # (Lq,)
    key_positions = torch.arange(len_k, device=device)  # (Lk,)
    distance = (query_positions[:, None] - key_positions[None, :]).abs().float()  # (Lq, Lk)
    return -slopes[:, None, None] * distance  # (H, Lq, Lk)
