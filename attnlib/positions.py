"""Positional encodings (lesson 07): telling a permutation-blind layer where each token is.

Self-attention treats its input as a set: permute the tokens and the outputs permute the
same way (lesson 05). Word order has to enter some other way. The Transformer paper adds
a fixed pattern of sines and cosines to the token embeddings:

    PE[p, 2i]     = sin(p / 10000^(2i / d_model))
    PE[p, 2i + 1] = cos(p / 10000^(2i / d_model))

Each pair of features (2i, 2i+1) is a point on a circle that turns at its own frequency as
the position p grows, from one turn every 2π positions (i = 0) to one every 10000·2π.
"""

from __future__ import annotations

import math

import torch


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
