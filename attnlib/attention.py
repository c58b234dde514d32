"""Scaled dot-product attention (lesson 02), the function every later lesson calls.

``softmax(Q Kᵀ / √d_k) V``: each query scores every key, the scores become weights,
and the output is the weighted sum of the values. Two paths compute it:

* the readable path, exactly the three steps lesson 02 derives (scores, masked softmax,
  weighted sum); it is used whenever the weights are asked for;
* the fast path, torch's fused kernel, used otherwise. Tests prove the two agree.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F

from ._validate import check_mask, require_float, require_min_dims, require_tensor
from .similarity import dot_product_scores
from .softmax import masked_softmax


def causal_mask(size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``(size, size)`` mask, True on and below the diagonal.

    Row i (a query) may attend to columns j ≤ i (keys at or before it): the future is
    hidden. Same convention as torch: True = may attend.
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, got {type(size).__name__}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    ones = torch.ones(size, size, dtype=torch.bool, device=device)  # (size, size)
    return torch.tril(ones)  # (size, size)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    bias: torch.Tensor | None = None,
):
    """Attend from every query to the keys and return the weighted sum of the values.

    Shapes: query ``(..., Lq, d_k)``, key ``(..., Lk, d_k)``, value ``(..., Lk, d_v)``;
    leading dimensions broadcast. Returns the output ``(..., Lq, d_v)``, or
    ``(output, weights)`` with weights ``(..., Lq, Lk)`` when ``return_weights=True``.

    * ``mask``: boolean, broadcastable to ``(..., Lq, Lk)``, True = may attend.
    * ``causal=True``: query i sees keys j ≤ i (top-left aligned, like torch). With a
      mask as well, a key must be allowed by both.
    * ``scale``: multiplies the scores; defaults to ``1/√d_k``.
    * ``dropout_p``: probability of dropping each attention weight (as torch does, it
      applies whenever it is above zero; pass 0 at evaluation time).
    * ``bias``: a float tensor broadcastable to ``(..., Lq, Lk)``, added to the scaled
      scores before the softmax (ALiBi's distance penalty, lesson 07). The fused kernel
      still runs: it takes the bias as its additive mask.

    A query that may attend to nothing gets zero output and zero weights, never NaN.
    Matches ``torch.nn.functional.scaled_dot_product_attention`` wherever torch
    defines a result.
    """
    batch = _check_inputs(query, key, value, causal, scale, dropout_p)  # the broadcast leading dimensions
    lq, lk = query.shape[-2], key.shape[-2]
    scores_shape = (*batch, lq, lk)
    if mask is not None:
        check_mask(mask, scores_shape, query.device)
    if bias is not None:
        bias = _check_bias(bias, scores_shape, query)  # (..., Lq, Lk) broadcastable, query's dtype
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])

    if return_weights or lk == 0:
        if causal:
            mask = _with_causal(mask, lq, lk, query.device)  # (..., Lq, Lk)
        if mask is not None:
            mask = torch.broadcast_to(mask, scores_shape)  # (..., Lq, Lk)
        return _readable_attention(query, key, value, mask, scale, dropout_p, return_weights, bias)
    if bias is not None:
        return _fused_attention_with_bias(query, key, value, mask, causal, scale, dropout_p, batch, bias)
    return _fused_attention(query, key, value, mask, causal, scale, dropout_p, batch)


def _with_causal(mask, lq: int, lk: int, device) -> torch.Tensor:
    """``mask`` (or nothing) combined with "query i sees keys j ≤ i": (..., Lq, Lk)."""
    future_hidden = torch.ones(lq, lk, dtype=torch.bool, device=device).tril()  # (Lq, Lk)
    return future_hidden if mask is None else mask & future_hidden  # (..., Lq, Lk)


def _readable_attention(query, key, value, mask, scale, dropout_p, return_weights, bias=None):
    """The three steps of lesson 02: scores, masked softmax, weighted sum (plus a score bias, if any)."""
    half = query.dtype in (torch.float16, torch.bfloat16)
    q, k = (query.float(), key.float()) if half else (query, key)  # avoid fp16 overflow in Q Kᵀ
    scores = dot_product_scores(q, k, scale)  # (..., Lq, Lk)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)  # (..., Lq, Lk): e.g. ALiBi's -slope · distance
    weights = masked_softmax(scores, mask)  # (..., Lq, Lk), rows sum to 1 (or are all 0)
    if dropout_p > 0:
        weights = F.dropout(weights, p=dropout_p)  # (..., Lq, Lk)
    weights = weights.to(value.dtype)  # (..., Lq, Lk)
    output = weights @ value  # (..., Lq, Lk) @ (..., Lk, d_v) -> (..., Lq, d_v)
    return (output, weights) if return_weights else output


def _fused_attention(query, key, value, mask, causal, scale, dropout_p, batch):
    """torch's fused kernel, doing no more work around it than the mask requires.

    * No mask: the kernel as it is; with ``causal`` it skips the future itself
      (``is_causal=True``, top-left aligned like ours), and every query sees key 0.
    * A mask: the kernel gives NaN for a query that may attend to nothing, so such rows
      are found on the mask as given, before broadcasting: for a key-padding mask
      ``(B, 1, 1, Lk)`` that is B numbers. On a CPU, when there are none (the usual
      case), nothing else is done; otherwise those rows attend everywhere (keeping the
      kernel finite) and their output is set to zero.
    """
    q = query if query.shape[:-2] == batch else query.expand(*batch, *query.shape[-2:])  # (..., Lq, d_k)
    k = key if key.shape[:-2] == batch else key.expand(*batch, *key.shape[-2:])  # (..., Lk, d_k)
    v = value if value.shape[:-2] == batch else value.expand(*batch, *value.shape[-2:])  # (..., Lk, d_v)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale)
    if causal:
        mask = _with_causal(mask, query.shape[-2], key.shape[-2], query.device)  # (..., Lq, Lk)
    sees_something = mask.any(dim=-1, keepdim=True)  # (..., Lq or 1, 1), on the mask's own shape
    if query.device.type == "cpu" and bool(sees_something.all()):  # nothing to mend (no GPU sync on CPU)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    safe_mask = mask | ~sees_something  # (..., Lq or 1, Lk): empty rows attend everywhere
    output = F.scaled_dot_product_attention(q, k, v, attn_mask=safe_mask, dropout_p=dropout_p, scale=scale)
    return output.masked_fill(~sees_something, 0.0)  # (..., Lq, d_v): and then get zeros


def _fused_attention_with_bias(query, key, value, mask, causal, scale, dropout_p, batch, bias):
    """The fused kernel with an additive float mask: the bias, with -inf where ``mask``/``causal`` forbid.

    The kernel accepts either ``is_causal`` or a mask, not both, so causality joins the mask
    here. Queries that may attend to nothing are found on the boolean mask, as in
    :func:`_fused_attention`, and get zeros.
    """
    lq, lk = query.shape[-2], key.shape[-2]
    q = query if query.shape[:-2] == batch else query.expand(*batch, *query.shape[-2:])  # (..., Lq, d_k)
    k = key if key.shape[:-2] == batch else key.expand(*batch, *key.shape[-2:])  # (..., Lk, d_k)
    v = value if value.shape[:-2] == batch else value.expand(*batch, *value.shape[-2:])  # (..., Lk, d_v)
    if causal:
        mask = _with_causal(mask, lq, lk, query.device)  # (..., Lq, Lk)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
    sees_something = mask.any(dim=-1, keepdim=True)  # (..., Lq or 1, 1)
    safe_mask = mask | ~sees_something  # (..., Lq or 1, Lk): empty rows attend everywhere (kept finite)
    minus_inf = torch.tensor(float("-inf"), dtype=bias.dtype, device=bias.device)  # ()
    additive = torch.where(safe_mask, bias, minus_inf)  # (..., Lq, Lk): the bias where allowed, -inf elsewhere
    output = F.scaled_dot_product_attention(q, k, v, attn_mask=additive, dropout_p=dropout_p, scale=scale)
    return output.masked_fill(~sees_something, 0.0)  # (..., Lq, d_v): and then get zeros


def _check_bias(bias, scores_shape: tuple[int, ...], query: torch.Tensor) -> torch.Tensor:
    """A score bias must be a float tensor broadcastable to the scores, on the query's device."""
    require_float(require_tensor(bias, "bias"), "bias")
    try:
        shape = torch.broadcast_shapes(tuple(bias.shape), scores_shape)
    except RuntimeError:
        shape = None
    if shape != scores_shape:
        raise ValueError(
            f"bias of shape {tuple(bias.shape)} must broadcast to the scores' shape {scores_shape} "
            "(..., Lq, Lk), and not beyond it"
        )
    if bias.device != query.device:
        raise ValueError(f"bias is on {bias.device} but the query is on {query.device}")
    return bias.to(query.dtype)


def _check_inputs(query, key, value, causal, scale, dropout_p):
    for name, t, layout in (
        ("query", query, "(..., Lq, d_k)"),
        ("key", key, "(..., Lk, d_k)"),
        ("value", value, "(..., Lk, d_v)"),
    ):
        require_tensor(t, name)
        require_float(t, name)
        require_min_dims(t, name, 2, layout)
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(
            f"query, key and value must share one dtype: got {query.dtype}, {key.dtype}, {value.dtype}"
        )
    if not (query.device == key.device == value.device):
        raise ValueError(
            f"query, key and value must be on one device: got {query.device}, {key.device}, {value.device}"
        )
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query (..., Lq, d_k) and key (..., Lk, d_k) must share d_k: "
            f"got query {tuple(query.shape)} and key {tuple(key.shape)}"
        )
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"key (..., Lk, d_k) and value (..., Lk, d_v) must have the same number of positions Lk: "
            f"got key {tuple(key.shape)} and value {tuple(value.shape)}"
        )
    try:
        batch = _batch_shape(query, key, value)
    except RuntimeError:
        raise ValueError(
            f"the leading (batch) dimensions of query {tuple(query.shape)}, key {tuple(key.shape)} "
            f"and value {tuple(value.shape)} do not broadcast together"
        ) from None
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be True or False, got {causal!r}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(scale)):
        raise TypeError(f"scale must be a finite number or None, got {scale!r}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, Real) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a number in [0, 1), got {dropout_p!r}")
    return batch


def _batch_shape(query, key, value) -> torch.Size:
    """The leading dimensions of query, key and value broadcast together.

    The usual case, all three alike, skips ``torch.broadcast_shapes``, whose cost (tens of
    microseconds) shows when a KV-cached generation step calls attention for one token.
    """
    shape = query.shape[:-2]
    if key.shape[:-2] == shape and value.shape[:-2] == shape:
        return shape
    return torch.broadcast_shapes(shape, key.shape[:-2], value.shape[:-2])
