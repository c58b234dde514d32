"""Multi-head attention (lesson 06): several attentions side by side, each in its own subspace.

One softmax gives each query one weighted average. To look at several places at once, the
layer splits the model width ``d_model`` into ``num_heads`` heads of ``d_head = d_model /
num_heads`` numbers, runs scaled dot-product attention in every head independently, and
concatenates the results before a final output projection:

    Q, K, V = X_q W_Q, X_kv W_K, X_kv W_V          (B, L, d_model) each
    head_h = softmax(Q_h K_hᵀ / √d_head) V_h       (B, Lq, d_head), h = 1 .. num_heads
    output = [head_1 | ... | head_H] W_O           (B, Lq, d_model)

The parameters carry the names of ``torch.nn.MultiheadAttention``'s (``in_proj_weight``,
``in_proj_bias``, ``out_proj``), so weights copy between the two with ``load_state_dict``.
``in_proj_weight`` stacks W_Q, W_K and W_V (each stored transposed, like ``nn.Linear``), so
self-attention projects all three with one matrix multiplication.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import autocast_enabled, require_float, require_tensor
from .attention import scaled_dot_product_attention


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, d_model) → (B, num_heads, L, d_head): each head gets its own slice of the features."""
    batch, length, width = x.shape
    x = x.view(batch, length, num_heads, width // num_heads)  # (B, L, H, d_head)
    return x.transpose(1, 2)  # (B, H, L, d_head)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, num_heads, L, d_head) → (B, L, num_heads · d_head): the heads' outputs side by side."""
    batch, heads, length, d_head = x.shape
    x = x.transpose(1, 2)  # (B, L, H, d_head)
    return x.reshape(batch, length, heads * d_head)  # (B, L, d_model)


class MultiHeadAttention(nn.Module):
    """``num_heads`` scaled dot-product attentions over slices of ``d_model``, then an output projection.

    ``MultiHeadAttention(d_model, num_heads, *, dropout=0.0, bias=True)``:

    * ``in_proj_weight`` ``(3·d_model, d_model)``: W_Q, W_K, W_V stacked (each as
      ``nn.Linear`` stores it, transposed); ``in_proj_bias`` ``(3·d_model,)`` or None;
    * ``out_proj``: ``nn.Linear(d_model, d_model)``, the W_O that mixes the heads;
    * ``dropout``: probability of dropping each attention weight, in training mode only.

    ``forward(query, key=None, value=None, *, mask=None, causal=False, return_weights=False)``:
    query ``(B, Lq, d_model)``, key and value ``(B, Lk, d_model)``; ``key`` defaults to
    ``query`` and ``value`` to ``key``, so ``mha(x)`` is self-attention. ``mask`` is
    boolean, broadcastable to ``(B, num_heads, Lq, Lk)``, True = may attend (a key-padding
    mask is ``(B, 1, 1, Lk)``); ``causal=True`` lets query i see keys j ≤ i, combined with
    ``mask`` when both are given. Returns ``(B, Lq, d_model)``, or ``(output, weights)``
    with weights ``(B, num_heads, Lq, Lk)`` when ``return_weights=True``. A query that may
    attend to nothing gets zeros from every head, never NaN.
    """

    def __init__(self, d_model: int, num_heads: int, *, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        for name, value in (("d_model", d_model), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if d_model % num_heads != 0:
            raise ValueError(
                f"d_model={d_model} is not divisible by num_heads={num_heads}: each head gets "
                f"d_model / num_heads features, so choose num_heads among the divisors of {d_model}"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.d_model, self.num_heads, self.d_head = d_model, num_heads, d_model // num_heads
        self.dropout = float(dropout)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))  # [W_Qᵀ; W_Kᵀ; W_Vᵀ]
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model)) if bias else None
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W_O
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.MultiheadAttention``: Xavier-uniform projections, zero biases."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        return_weights: bool = False,
    ):
        """Attend from ``query`` (B, Lq, d_model) to ``key``/``value`` (B, Lk, d_model); see the class."""
        key = query if key is None else key
        value = key if value is None else value
        self._check(query, key, value, mask)
        q, k, v = self.project(query, key, value)  # (B, Lq, d_model), (B, Lk, d_model), (B, Lk, d_model)
        q = split_heads(q, self.num_heads)  # (B, H, Lq, d_head)
        k = split_heads(k, self.num_heads)  # (B, H, Lk, d_head)
        v = split_heads(v, self.num_heads)  # (B, H, Lk, d_head)
        dropout_p = self.dropout if self.training else 0.0
        attended = scaled_dot_product_attention(
            q, k, v, mask, causal=causal, dropout_p=dropout_p, return_weights=return_weights
        )  # (B, H, Lq, d_head), or with the weights (B, H, Lq, Lk)
        heads, weights = attended if return_weights else (attended, None)
        output = self.out_proj(merge_heads(heads))  # (B, Lq, d_model) @ W_O -> (B, Lq, d_model)
        return (output, weights) if return_weights else output

    def project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
        """Q, K, V before the split into heads: one matmul for self-attention, two or three otherwise."""
        w, b, d = self.in_proj_weight, self.in_proj_bias, self.d_model
        if key is query and value is query:  # self-attention: [Q | K | V] = X [W_Q | W_K | W_V]
            return F.linear(query, w, b).chunk(3, dim=-1)  # 3 × (B, L, d_model)
        q = F.linear(query, w[:d], None if b is None else b[:d])  # (B, Lq, d_model)
        if value is key:  # cross-attention: keys and values come from the same memory
            k, v = F.linear(key, w[d:], None if b is None else b[d:]).chunk(2, dim=-1)  # 2 × (B, Lk, d_model)
            return q, k, v
        k = F.linear(key, w[d : 2 * d], None if b is None else b[d : 2 * d])  # (B, Lk, d_model)
        v = F.linear(value, w[2 * d :], None if b is None else b[2 * d :])  # (B, Lk, d_model)
        return q, k, v

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, d_head={self.d_head}, "
                f"dropout={self.dropout}, bias={self.in_proj_bias is not None}")

    def _check(self, query, key, value, mask) -> None:
        """Shapes and dtypes at the boundary; masks are checked by scaled_dot_product_attention."""
        for name, x, layout in (("query", query, "(B, Lq, d_model)"), ("key", key, "(B, Lk, d_model)"),
                                ("value", value, "(B, Lk, d_model)")):
            require_float(require_tensor(x, name), name)
            if x.dim() != 3 or x.shape[-1] != self.d_model:
                raise ValueError(f"{name} must have shape {layout} with d_model={self.d_model}, "
                                 f"got shape {tuple(x.shape)}")
            if x.dtype != self.in_proj_weight.dtype and not autocast_enabled(x.device.type):
                raise TypeError(f"{name} has dtype {x.dtype} but the layer's weights are "
                                f"{self.in_proj_weight.dtype}; convert one of them (e.g. x.to({self.in_proj_weight.dtype}))")
        if not query.shape[0] == key.shape[0] == value.shape[0]:
            raise ValueError(f"query, key and value must share the batch size B: got shapes {tuple(query.shape)}, "
                             f"{tuple(key.shape)}, {tuple(value.shape)}")
        if key.shape[1] != value.shape[1]:
            raise ValueError(f"key and value must have the same length Lk: got key {tuple(key.shape)} and value "
                             f"{tuple(value.shape)}")
        batch, length_q, length_k = query.shape[0], query.shape[1], key.shape[1]
        if isinstance(mask, torch.Tensor) and tuple(mask.shape) == (batch, length_k) and batch not in (1, length_q):
            raise ValueError(f"mask of shape {tuple(mask.shape)} looks like a (B, Lk) key-padding mask; give it "
                             f"the shape (B, 1, 1, Lk) = ({key.shape[0]}, 1, 1, {key.shape[1]}) so that it "
                             "broadcasts over heads and queries: mask[:, None, None, :]")
