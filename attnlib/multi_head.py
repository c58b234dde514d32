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

Options added by later lessons, all keyword-only and off by default:

* ``positions="rope"`` or ``"alibi"`` (lesson 07): rotary positions on the queries and keys,
  or ALiBi's distance penalty on the scores, for self-attention;
* ``num_kv_heads`` (lesson 11): grouped-query attention, fewer key/value heads than query
  heads, each shared by a group of ``num_heads / num_kv_heads`` query heads (1 = multi-query);
* ``forward(..., cache=KVCache(...))`` (lesson 11): project only the new tokens, and attend
  to the keys and values of every earlier one, kept in the cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import autocast_enabled, require_float, require_tensor
from .attention import scaled_dot_product_attention
from .positions import alibi_bias, apply_rope

_POSITIONS = (None, "rope", "alibi")


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, d_model) → (B, num_heads, L, d_head): each head gets its own slice of the features."""
    batch, length, width = x.shape
    x = x.view(batch, length, num_heads, width // num_heads)  # (B, L, H, d_head)
    return x.transpose(1, 2)  # (B, H, L, d_head)


def repeat_kv_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, H_kv, L, d_head) → (B, num_heads, L, d_head): each key/value head serves a group of query heads."""
    batch, kv_heads, length, d_head = x.shape
    if kv_heads == num_heads:
        return x
    group = num_heads // kv_heads
    x = x[:, :, None].expand(batch, kv_heads, group, length, d_head)  # (B, H_kv, group, L, d_head)
    return x.reshape(batch, num_heads, length, d_head)  # (B, H, L, d_head): heads g·group .. share KV head g


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
    * ``dropout``: probability of dropping each attention weight, in training mode only;
    * ``num_kv_heads``: key/value heads (default ``num_heads``); ``in_proj_weight`` is then
      ``(d_model + 2·num_kv_heads·d_head, d_model)``;
    * ``positions``: None, ``"rope"`` (rotary, base ``rope_base``) or ``"alibi"``;
      both are for self-attention.

    ``forward(query, key=None, value=None, *, mask=None, causal=False, return_weights=False)``:
    query ``(B, Lq, d_model)``, key and value ``(B, Lk, d_model)``; ``key`` defaults to
    ``query`` and ``value`` to ``key``, so ``mha(x)`` is self-attention. ``mask`` is
    boolean, broadcastable to ``(B, num_heads, Lq, Lk)``, True = may attend (a key-padding
    mask is ``(B, 1, 1, Lk)``); ``causal=True`` lets query i see keys j ≤ i, combined with
    ``mask`` when both are given. Returns ``(B, Lq, d_model)``, or ``(output, weights)``
    with weights ``(B, num_heads, Lq, Lk)`` when ``return_weights=True``. A query that may
    attend to nothing gets zeros from every head, never NaN. With ``cache`` (a
    :class:`attnlib.kv_cache.KVCache`), ``query`` holds only the new tokens of a
    self-attention, which sit after the ``cache.length`` cached ones.
    """

    def __init__(self, d_model: int, num_heads: int, *, dropout: float = 0.0, bias: bool = True,
                 num_kv_heads: int | None = None, positions: str | None = None, rope_base: float = 10000.0):
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
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if isinstance(num_kv_heads, bool) or not isinstance(num_kv_heads, int) or num_kv_heads < 1 \
                or num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads must be an int that divides num_heads={num_heads} (each key/value head "
                             f"serves a group of query heads), got {num_kv_heads!r}")
        if positions not in _POSITIONS:
            raise ValueError(f"positions must be one of {_POSITIONS}, got {positions!r}")
        if positions == "rope" and (d_model // num_heads) % 2:
            raise ValueError(f"positions='rope' rotates feature pairs, so d_head = d_model / num_heads must be even; "
                             f"got d_head = {d_model // num_heads}")
        self.d_model, self.num_heads, self.d_head = d_model, num_heads, d_model // num_heads
        self.num_kv_heads, self.positions, self.rope_base = num_kv_heads, positions, float(rope_base)
        self.dropout = float(dropout)
        width = d_model + 2 * num_kv_heads * self.d_head  # Q, then K and V: d_model each without grouping
        self.in_proj_weight = nn.Parameter(torch.empty(width, d_model))  # [W_Qᵀ; W_Kᵀ; W_Vᵀ]
        self.in_proj_bias = nn.Parameter(torch.zeros(width)) if bias else None
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
        cache=None,
    ):
        """Attend from ``query`` (B, Lq, d_model) to ``key``/``value`` (B, Lk, d_model); see the class."""
        key = query if key is None else key
        value = key if value is None else value
        self._check(query, key, value, mask, cache)
        offset = 0 if cache is None else cache.length  # positions already cached before the new queries
        q, k, v = self.project(query, key, value)  # (B, Lq, d_model), (B, Lk, H_kv·d_head) twice
        q = split_heads(q, self.num_heads)  # (B, H, Lq, d_head)
        k = split_heads(k, self.num_kv_heads)  # (B, H_kv, Lk, d_head)
        v = split_heads(v, self.num_kv_heads)  # (B, H_kv, Lk, d_head)
        if self.positions == "rope":  # rotate by absolute position: the score then depends on m - n only
            q = apply_rope(q, offset=offset, base=self.rope_base)  # (B, H, Lq, d_head)
            k = apply_rope(k, offset=offset, base=self.rope_base)  # (B, H_kv, Lk, d_head)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H_kv, offset + Lq, d_head): every position so far
            mask, causal = _cached_causal(mask, causal, offset, q.shape[-2], k.shape[-2], q.device)
        k = repeat_kv_heads(k, self.num_heads)  # (B, H, Lk, d_head)
        v = repeat_kv_heads(v, self.num_heads)  # (B, H, Lk, d_head)
        score_bias = None
        if self.positions == "alibi":
            score_bias = alibi_bias(self.num_heads, q.shape[-2], k.shape[-2], offset=offset,
                                    device=q.device)  # (H, Lq, Lk): -slope_h · distance
        dropout_p = self.dropout if self.training else 0.0
        attended = scaled_dot_product_attention(
            q, k, v, mask, causal=causal, dropout_p=dropout_p, return_weights=return_weights, bias=score_bias
        )  # (B, H, Lq, d_head), or with the weights (B, H, Lq, Lk)
        heads, weights = attended if return_weights else (attended, None)
        output = self.out_proj(merge_heads(heads))  # (B, Lq, d_model) @ W_O -> (B, Lq, d_model)
        return (output, weights) if return_weights else output

    def project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
        """Q, K, V before the split into heads: one matmul for self-attention, two or three otherwise.

        Q has d_model features; K and V have ``num_kv_heads · d_head`` each (d_model without grouping).
        """
        w, b, d = self.in_proj_weight, self.in_proj_bias, self.d_model
        kv = self.num_kv_heads * self.d_head
        if key is query and value is query:  # self-attention: [Q | K | V] = X [W_Q | W_K | W_V]
            return F.linear(query, w, b).split((d, kv, kv), dim=-1)  # (B, L, d_model), (B, L, kv), (B, L, kv)
        q = F.linear(query, w[:d], None if b is None else b[:d])  # (B, Lq, d_model)
        if value is key:  # cross-attention: keys and values come from the same memory
            k, v = F.linear(key, w[d:], None if b is None else b[d:]).chunk(2, dim=-1)  # 2 × (B, Lk, kv)
            return q, k, v
        k = F.linear(key, w[d : d + kv], None if b is None else b[d : d + kv])  # (B, Lk, kv)
        v = F.linear(value, w[d + kv :], None if b is None else b[d + kv :])  # (B, Lk, kv)
        return q, k, v

    def extra_repr(self) -> str:
        extra = "" if self.num_kv_heads == self.num_heads else f", num_kv_heads={self.num_kv_heads}"
        extra += "" if self.positions is None else f", positions={self.positions!r}"
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, d_head={self.d_head}, "
                f"dropout={self.dropout}, bias={self.in_proj_bias is not None}{extra}")

    def _check(self, query, key, value, mask, cache) -> None:
        """Shapes and dtypes at the boundary; masks are checked by scaled_dot_product_attention."""
        if (self.positions is not None or cache is not None) and not (key is query and value is query):
            what = f"positions={self.positions!r}" if cache is None else "a KV cache"
            raise ValueError(f"{what} is for self-attention: call the layer with one sequence, layer(x), "
                             "not with separate keys or values")
        if cache is not None and not (hasattr(cache, "length") and callable(getattr(cache, "append", None))):
            raise TypeError(f"cache must be an attnlib.kv_cache.KVCache (or have .length and .append), "
                            f"got {type(cache).__name__}")
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


def _cached_causal(mask, causal: bool, offset: int, len_q: int, len_k: int, device):
    """The mask and causal flag for ``len_q`` new queries at positions offset .. after ``offset`` cached ones.

    Query i (at position offset + i) may see keys j <= offset + i. One new query sees every
    cached key, so nothing is hidden; a first call (offset 0) is the usual causal case.
    """
    if not causal or offset == 0:
        return mask, causal
    if len_q == 1:
        return mask, False  # the newest token sees all the others: nothing to hide
    positions = torch.arange(offset, offset + len_q, device=device)[:, None]  # (Lq, 1)
    sees = torch.arange(len_k, device=device)[None, :] <= positions  # (Lq, Lk)
    return (sees if mask is None else mask & sees), False
