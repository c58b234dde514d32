"""Similarity between vectors: the dot product and the cosine (lesson 01).

Attention starts here: a query is compared with every key, and the comparison is a
dot product. Doing all comparisons at once is one matrix multiplication.
"""

from __future__ import annotations

import torch

from ._validate import require_float, require_min_dims, require_tensor


def dot_product_scores(query: torch.Tensor, key: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Score every query against every key with a dot product.

    query ``(..., Lq, d)``, key ``(..., Lk, d)`` → scores ``(..., Lq, Lk)`` where
    ``scores[..., i, j] = scale * query[..., i, :] · key[..., j, :]``. Leading (batch)
    dimensions broadcast. ``scale`` is 1 here; attention uses ``1/sqrt(d)`` (lesson 02).
    """
    require_tensor(query, "query")
    require_tensor(key, "key")
    require_min_dims(query, "query", 2, "(..., Lq, d)")
    require_min_dims(key, "key", 2, "(..., Lk, d)")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query (..., Lq, d) and key (..., Lk, d) must have the same last dimension d: "
            f"got query {tuple(query.shape)} and key {tuple(key.shape)}"
        )
    scores = query @ key.transpose(-2, -1)  # (..., Lq, d) @ (..., d, Lk) -> (..., Lq, Lk)
    return scores * scale if scale != 1.0 else scores  # (..., Lq, Lk)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine of the angle between ``a`` and ``b`` along their last dimension.

    a ``(..., d)``, b ``(..., d)`` (broadcastable) → ``(...)`` in [-1, 1]. Unlike the dot
    product it ignores length: only direction counts. ``eps`` keeps a zero vector from
    dividing by zero (its cosine with anything is 0).
    """
    require_float(require_tensor(a, "a"), "a")
    require_float(require_tensor(b, "b"), "b")
    if a.shape[-1:] != b.shape[-1:]:
        raise ValueError(
            f"a (..., d) and b (..., d) must have the same last dimension: "
            f"got a {tuple(a.shape)} and b {tuple(b.shape)}"
        )
    dot = (a * b).sum(-1)  # (...)
    norms = a.norm(dim=-1) * b.norm(dim=-1)  # (...)
    return dot / norms.clamp_min(eps)  # (...)
