"""The KV cache (lesson 11): keys and values computed once, kept for every later token.

A causal model generating text runs one new token at a time. Its query is new, but the keys
and values of all the earlier tokens are exactly what the previous steps computed: causal
attention never lets an old token see a new one, so they never change. Keeping them turns
each step's cost from "recompute the whole prefix" into "compute one token and attend".

``MultiHeadAttention.forward(x, cache=KVCache(...))`` uses it: it projects only the new
tokens, appends their keys and values here, and attends to everything cached. The cache
preallocates ``max_length`` positions on its first append, so appending never copies the
past again.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of one attention layer, ``(B, num_kv_heads, length, d_head)`` each, up to ``max_length``.

    ``length`` is the number of positions cached (0 when new). :meth:`append` adds the new
    positions' keys and values and returns all of them so far; :meth:`reset` empties it.
    """

    def __init__(self, max_length: int):
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an int >= 1, got {max_length!r}")
        self.max_length = max_length
        self.length = 0
        self.keys: torch.Tensor | None = None  # (B, H_kv, max_length, d_head) once allocated
        self.values: torch.Tensor | None = None  # (B, H_kv, max_length, d_head)

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add ``keys``, ``values`` ``(B, H_kv, L_new, d_head)``; return the cached ``(B, H_kv, length, d_head)`` pair."""
        if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
            raise TypeError("keys and values must be torch.Tensors of shape (B, H_kv, L_new, d_head)")
        if keys.dim() != 4 or keys.shape != values.shape:
            raise ValueError(f"keys and values must share one shape (B, H_kv, L_new, d_head), got "
                             f"{tuple(keys.shape)} and {tuple(values.shape)}")
        if self.keys is None:
            batch, heads, _, d_head = keys.shape
            self.keys = keys.new_empty(batch, heads, self.max_length, d_head)  # (B, H_kv, max_length, d_head)
            self.values = values.new_empty(batch, heads, self.max_length, d_head)  # (B, H_kv, max_length, d_head)
        expected = (self.keys.shape[0], self.keys.shape[1], keys.shape[2], self.keys.shape[3])
        if tuple(keys.shape) != expected:
            raise ValueError(f"this cache holds (B, H_kv, ·, d_head) = {tuple(self.keys.shape[:2])} and "
                             f"{self.keys.shape[3]}; got new keys of shape {tuple(keys.shape)}")
        end = self.length + keys.shape[2]
        if end > self.max_length:
            raise ValueError(f"the cache holds at most {self.max_length} positions; {self.length} are cached and "
                             f"{keys.shape[2]} more do not fit (crop the context, or make a larger cache)")
        self.keys[:, :, self.length:end] = keys  # write the new positions in place: the past is not copied
        self.values[:, :, self.length:end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]  # (B, H_kv, length, d_head) each

    def reset(self) -> None:
        """Forget every cached position (the buffers are kept for reuse)."""
        self.length = 0

    @property
    def nbytes(self) -> int:
        """Bytes the cached positions take: 2 (keys, values) · B · H_kv · length · d_head · element size."""
        if self.keys is None:
            return 0
        batch, heads, _, d_head = self.keys.shape
        return 2 * batch * heads * self.length * d_head * self.keys.element_size()

    def __repr__(self) -> str:
        shape = "unallocated" if self.keys is None else f"(B, H_kv, d_head) = {tuple(self.keys.shape[:2])}, {self.keys.shape[3]}"
        return f"KVCache(length={self.length}, max_length={self.max_length}, {shape})"
