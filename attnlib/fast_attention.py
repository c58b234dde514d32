"""Online softmax and flash-style tiled attention (lesson 11), in plain torch.

Attention as lesson 02 computes it stores the whole ``(Lq, Lk)`` score matrix: memory
that grows like L². It need not. A softmax can be computed while the scores stream past,
one tile of keys at a time, keeping for each query only a **running maximum** m and a
**running sum** l of exponentials (Milakov and Gimelshein, 2018). When a tile brings a
larger maximum m', everything accumulated so far is rescaled by ``exp(m - m')``:

    m' = max(m, max_j s_j)                       the new running maximum
    l' = l · exp(m - m') + Σ_j exp(s_j - m')     the running sum, rescaled to m'
    o' = o · exp(m - m') + Σ_j exp(s_j - m') v_j  the unnormalised output, rescaled alike

and at the end ``softmax(s) V = o / l``. FlashAttention (Dao et al., 2022) is this
recurrence inside one GPU kernel. :func:`tiled_attention` is the same recurrence as a
Python loop over key tiles: its largest intermediate is one ``(Lq, tile)`` block of scores,
so its memory grows like L · tile instead of L². It is exact (equal to the reference up to
rounding), but slower than torch's fused kernel: every tile is a handful of separate torch
operations, each writing its result to memory and reading it back, where a real kernel
keeps the tile in on-chip memory and never writes the scores out at all.
"""

from __future__ import annotations

import math

import torch

from ._validate import check_mask, require_float, require_min_dims, require_tensor
from .attention import _check_inputs


def online_softmax_stats(scores: torch.Tensor, tile_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The running maximum and running sum of one streaming pass over ``scores`` ``(..., L)``.

    Returns ``(m, l)``, each ``(..., 1)``: ``m = max_j s_j`` and ``l = Σ_j exp(s_j - m)``,
    computed ``tile_size`` scores at a time with the rescaling ``l · exp(m_old - m_new)``.
    Then ``softmax(s) = exp(s - m) / l``. A row of only ``-inf`` keeps ``m = -inf``, ``l = 0``.
    """
    require_float(require_tensor(scores, "scores"), "scores")
    require_min_dims(scores, "scores", 1, "(..., L)")
    _check_tile(tile_size)
    shape = (*scores.shape[:-1], 1)
    running_max = scores.new_full(shape, float("-inf"))  # (..., 1)
    running_sum = scores.new_zeros(shape)  # (..., 1)
    for start in range(0, scores.shape[-1], tile_size):
        tile = scores[..., start:start + tile_size]  # (..., tile)
        new_max = torch.maximum(running_max, tile.amax(dim=-1, keepdim=True))  # (..., 1)
        safe_max = _finite_or_zero(new_max)  # (..., 1): a row with no finite score yet stays at 0
        running_sum = running_sum * torch.exp(running_max - safe_max) \
            + torch.exp(tile - safe_max).sum(dim=-1, keepdim=True)  # (..., 1): old sum rescaled + the tile's
        running_max = new_max
    return running_max, running_sum


def online_softmax(scores: torch.Tensor, tile_size: int = 64) -> torch.Tensor:
    """``softmax(scores, dim=-1)`` ``(..., L)`` from the streaming statistics of :func:`online_softmax_stats`.

    A row of only ``-inf`` becomes zeros (the course's convention), never NaN.
    """
    running_max, running_sum = online_softmax_stats(scores, tile_size)  # (..., 1) each
    weights = torch.exp(scores - _finite_or_zero(running_max))  # (..., L)
    return torch.where(running_sum > 0, weights / running_sum.clamp_min(1e-30), torch.zeros_like(weights))


def tiled_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None,
                    *, causal: bool = False, scale: float | None = None, tile_size: int = 64,
                    return_logsumexp: bool = False):
    """Scaled dot-product attention computed one tile of keys at a time (flash-style, forward only).

    Shapes as :func:`attnlib.scaled_dot_product_attention`: query ``(..., Lq, d_k)``, key
    ``(..., Lk, d_k)``, value ``(..., Lk, d_v)``, leading dimensions broadcast; ``mask``
    boolean, broadcastable to ``(..., Lq, Lk)``, True = may attend; ``causal=True``: query i
    sees keys j ≤ i. Returns ``(..., Lq, d_v)``, equal to the reference; with
    ``return_logsumexp`` also ``log Σ_j exp(s_ij)`` ``(..., Lq)``, what a kernel keeps for
    its backward pass (``-inf`` for a query that sees nothing).

    The largest intermediate is one block of scores ``(..., Lq, tile_size)``. With
    ``causal``, a key tile starting at column s is seen only by queries i ≥ s, so the rows
    above it are skipped, and only the tile on the diagonal needs a mask: the two savings
    of a real causal kernel. Half-precision inputs are accumulated in float32. A query
    that may attend to nothing gets zeros, never NaN.
    """
    batch = _check_inputs(query, key, value, causal, scale, 0.0)  # the broadcast leading dimensions
    _check_tile(tile_size)
    lq, lk = query.shape[-2], key.shape[-2]
    if mask is not None:
        check_mask(mask, (*batch, lq, lk), query.device)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    work = torch.float32 if query.dtype in (torch.float16, torch.bfloat16) else query.dtype
    q = (query.to(work) * scale).expand(*batch, lq, query.shape[-1])  # (..., Lq, d_k): scaled once
    k = key.to(work).expand(*batch, lk, key.shape[-1])  # (..., Lk, d_k)
    v = value.to(work).expand(*batch, lk, value.shape[-1])  # (..., Lk, d_v)

    running_max = q.new_full((*batch, lq, 1), float("-inf"))  # (..., Lq, 1): m
    running_sum = q.new_zeros((*batch, lq, 1))  # (..., Lq, 1): l
    output = q.new_zeros((*batch, lq, v.shape[-1]))  # (..., Lq, d_v): o, not yet divided by l
    for start in range(0, lk, tile_size):
        end = min(start + tile_size, lk)
        first = start if causal else 0  # causal: queries above row `start` see none of these keys
        if first >= lq:
            break
        scores = q[..., first:, :] @ k[..., start:end, :].transpose(-2, -1)  # (..., Lq - first, tile)
        allowed = _tile_mask(mask, causal, first, lq, start, end, query.device)  # None, or broadcastable
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))  # (..., Lq - first, tile)
        old_max = running_max[..., first:, :]  # (..., Lq - first, 1)
        new_max = torch.maximum(old_max, scores.amax(dim=-1, keepdim=True))  # (..., Lq - first, 1)
        safe_max = _finite_or_zero(new_max)  # (..., Lq - first, 1)
        rescale = torch.exp(old_max - safe_max)  # (..., Lq - first, 1): exp(m - m'), 0 while m = -inf
        weights = torch.exp(scores - safe_max)  # (..., Lq - first, tile): unnormalised
        new_sum = running_sum[..., first:, :] * rescale + weights.sum(dim=-1, keepdim=True)  # (..., Lq - first, 1)
        new_output = output[..., first:, :] * rescale + weights @ v[..., start:end, :]  # (..., Lq - first, d_v)
        running_max = _rows_from(running_max, first, new_max)  # (..., Lq, 1): rows above `first` unchanged
        running_sum = _rows_from(running_sum, first, new_sum)  # (..., Lq, 1)
        output = _rows_from(output, first, new_output)  # (..., Lq, d_v)

    seen = running_sum > 0  # (..., Lq, 1): False for a query that may attend to nothing
    result = torch.where(seen, output / running_sum.clamp_min(1e-30), torch.zeros_like(output))  # (..., Lq, d_v)
    result = result.to(query.dtype)
    if not return_logsumexp:
        return result
    logsumexp = torch.where(seen, running_max + torch.log(running_sum.clamp_min(1e-30)),
                            torch.full_like(running_max, float("-inf")))  # (..., Lq, 1)
    return result, logsumexp[..., 0]  # (..., Lq, d_v), (..., Lq)


def _tile_mask(mask, causal: bool, first: int, lq: int, start: int, end: int, device):
    """Which of the queries first .. Lq-1 may see the keys start .. end-1: None when all may."""
    allowed = None
    if mask is not None:
        rows = mask if mask.shape[-2] == 1 else mask[..., first:, :]  # (..., Lq - first or 1, Lk or 1)
        allowed = rows if rows.shape[-1] == 1 else rows[..., start:end]  # (..., ·, tile or 1)
    if causal and end - 1 > first:  # the tile reaches right of the diagonal: hide the future inside it
        queries = torch.arange(first, lq, device=device)[:, None]  # (Lq - first, 1)
        keys = torch.arange(start, end, device=device)[None, :]  # (1, tile)
        future_hidden = keys <= queries  # (Lq - first, tile)
        allowed = future_hidden if allowed is None else allowed & future_hidden
    return allowed


def _rows_from(old: torch.Tensor, first: int, new_rows: torch.Tensor) -> torch.Tensor:
    """``old`` (..., Lq, n) with its rows ``first ..`` replaced by ``new_rows``; new tensors, so autograd can follow."""
    return new_rows if first == 0 else torch.cat([old[..., :first, :], new_rows], dim=-2)


def _finite_or_zero(running_max: torch.Tensor) -> torch.Tensor:
    """The running maximum where finite, else 0: exp(-inf - 0) = 0 instead of exp(-inf + inf) = NaN."""
    return torch.where(torch.isfinite(running_max), running_max, torch.zeros_like(running_max))


def _check_tile(tile_size) -> None:
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be an int >= 1 (the number of keys per tile), got {tile_size!r}")
