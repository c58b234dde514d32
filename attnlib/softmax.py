"""Softmax, and softmax that respects a mask (lesson 02).

Softmax turns a row of scores into weights that are positive and sum to one. A mask
says which scores may take part (True = may attend); masked scores get weight zero, and
a row in which nothing may be attended gets all-zero weights instead of NaN.
"""

from __future__ import annotations

import torch

from ._validate import check_mask, require_float, require_min_dims, require_tensor

_HALF = (torch.float16, torch.bfloat16)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dimension of ``scores``, ignoring masked-out entries.

    scores ``(..., Lk)``; mask boolean, broadcastable to ``scores``, True = may attend
    → weights with the shape and dtype of ``scores``. Each row sums to one over its
    allowed entries; a row with no allowed entry is all zeros. The row's largest
    score is subtracted before ``exp`` so huge scores stay finite; half-precision
    scores are computed in float32 and cast back.
    """
    require_float(require_tensor(scores, "scores"), "scores")
    require_min_dims(scores, "scores", 1, "(..., Lk)")
    work = scores.float() if scores.dtype in _HALF else scores  # (..., Lk)
    if mask is not None:
        check_mask(mask, tuple(scores.shape), scores.device)
        work = work.masked_fill(~mask, float("-inf"))  # (..., Lk), -inf where not allowed
    if work.shape[-1] == 0:  # no keys at all: nothing to weigh (amax would fail on an empty row)
        return torch.zeros_like(scores)  # (..., 0)
    row_max = work.amax(dim=-1, keepdim=True).detach()  # (..., 1); softmax ignores shifts
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exp = torch.exp(work - row_max)  # (..., Lk), 0 where not allowed
    total = exp.sum(dim=-1, keepdim=True)  # (..., 1), 0 for an all-masked row
    weights = exp / total.clamp_min(torch.finfo(exp.dtype).tiny)  # (..., Lk)
    return weights.to(scores.dtype)  # (..., Lk)
