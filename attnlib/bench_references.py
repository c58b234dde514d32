"""Two GPTs in plain torch for :mod:`attnlib.bench` to race :class:`attnlib.GPT` against (lesson 11).

Both have exactly attnlib.GPT's architecture and parameter count (pre-norm blocks, GELU,
learned positions, weight tying) and differ only in how attention is computed:

* :class:`PlainGPT`, the textbook version: separate Q, K and V projections and attention
  written out, ``softmax(Q Kᵀ / √d + causal mask) V``, the L × L matrix stored;
* :class:`MinimalGPT`, what the fastest minimal GPTs do: one fused QKV projection and
  ``F.scaled_dot_product_attention(..., is_causal=True)``, with nothing else in the way.

If attnlib.GPT trains as fast as :class:`MinimalGPT`, the course's model is not a slow
teaching toy; :class:`PlainGPT` shows what the fused projection and kernel are worth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, fused: bool):
        super().__init__()
        self.n_head, self.fused = n_head, fused
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        if fused:
            self.qkv = nn.Linear(d_model, 3 * d_model)  # [W_Q | W_K | W_V] in one matmul
        else:
            self.q, self.k, self.v = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out = nn.Linear(d_model, d_model)
        self.up, self.down = nn.Linear(d_model, 4 * d_model), nn.Linear(4 * d_model, d_model)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        if self.fused:
            q, k, v = self.qkv(x).split(width, dim=-1)  # 3 × (B, T, d)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)  # 3 × (B, T, d)
        q, k, v = (t.view(batch, length, self.n_head, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, T, d_head)
        if self.fused:
            heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, d_head)
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
            future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)  # (T, T)
            heads = scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v  # (B, H, T, d_head)
        return self.out(heads.transpose(1, 2).reshape(batch, length, width))  # (B, T, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))  # (B, T, d)
        return x + self.down(F.gelu(self.up(self.norm2(x))))  # (B, T, d)


class _ReferenceGPT(nn.Module):
    fused = True

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, d_model: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_head, self.fused) for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # weight tying, as attnlib.GPT
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        positions = torch.arange(idx.shape[1], device=idx.device)  # (T,)
        x = self.token_embedding(idx) + self.position_embedding(positions)  # (B, T, d)
        for block in self.blocks:
            x = block(x)  # (B, T, d)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class MinimalGPT(_ReferenceGPT):
    """A minimal GPT as the fastest small implementations write it: fused QKV, ``is_causal`` kernel."""

    fused = True


class PlainGPT(_ReferenceGPT):
    """The textbook GPT: separate Q, K, V projections; attention written out with an L × L matrix."""

    fused = False
