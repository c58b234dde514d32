"""Additive (Bahdanau) attention (lesson 04).

Before dot-product attention became the default, Bahdanau, Cho and Bengio (2014) let a
decoder look back at the encoder with a tiny neural network as the scoring function:

    score(q, k_j) = vᵀ tanh(W_q q + W_k k_j)

Query and key are each projected into a shared ``hidden_dim`` space, added, squashed
by tanh and read out by the vector ``v``. Because the two projections are separate,
the query and the keys may have different sizes. The scores become weights with a
masked softmax, and the context is the weighted sum of the keys (in seq2seq, the
encoder's states serve as both keys and values).
"""

from __future__ import annotations

import torch
from torch import nn

from ._validate import check_mask, require_float, require_tensor
from .softmax import masked_softmax


class QueryKeyProjections(nn.Module):
    """The learned W_q and W_k that both scorers of one query over many keys start from.

    :class:`AdditiveAttention` adds vᵀ on top; ``attnlib.seq2seq.DotProductAttention``
    uses them as they are. Keeping them in one place keeps the two comparable.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int):
        super().__init__()
        for name, value in (("query_dim", query_dim), ("key_dim", key_dim), ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)  # W_q
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=False)  # W_k

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """W_k k_j for every key: (B, S, Dk) -> (B, S, A).

        A decoder attends to the same keys at every step; it can compute this once and
        pass it to ``forward`` as ``projected_keys`` instead of repeating it each step.
        """
        return self.key_proj(keys)  # (B, S, A)

    def extra_repr(self) -> str:
        return f"query_dim={self.query_dim}, key_dim={self.key_dim}, hidden_dim={self.hidden_dim}"


class AdditiveAttention(QueryKeyProjections):
    """One query attends over a sequence of keys with Bahdanau's additive score.

    ``AdditiveAttention(query_dim, key_dim, hidden_dim)`` holds three learned pieces,
    none with a bias, so the module is exactly the formula above:

    * ``query_proj``: W_q, ``(hidden_dim, query_dim)``;
    * ``key_proj``: W_k, ``(hidden_dim, key_dim)``;
    * ``score``: vᵀ, ``(1, hidden_dim)``.

    ``forward(query (B, Dq), keys (B, S, Dk), mask (B, S) bool or None)`` returns
    ``(context (B, Dk), weights (B, S))``. The weights sum to one over the keys the
    mask allows (True = may attend) and are exactly zero at the others (padding); a
    row that may attend to nothing gets zero weights and a zero context, never NaN.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int):
        super().__init__(query_dim, key_dim, hidden_dim)  # W_q, W_k
        self.score = nn.Linear(hidden_dim, 1, bias=False)  # vᵀ

    def scores(
        self, query: torch.Tensor, keys: torch.Tensor, projected_keys: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw scores vᵀ tanh(W_q q + W_k k_j): query (B, Dq), keys (B, S, Dk) -> (B, S)."""
        projected_query = self.query_proj(query)  # (B, A)
        if projected_keys is None:
            projected_keys = self.project_keys(keys)  # (B, S, A)
        hidden = torch.tanh(projected_query[:, None, :] + projected_keys)  # (B, 1, A) + (B, S, A) -> (B, S, A)
        return self.score(hidden).squeeze(-1)  # (B, S, 1) -> (B, S)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        projected_keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (B, Dk) and weights (B, S) of ``query`` (B, Dq) over ``keys`` (B, S, Dk).

        ``projected_keys`` (B, S, A), optional: ``project_keys(keys)`` computed beforehand.
        """
        check_query_and_keys(self, query, keys, mask, projected_keys)
        scores = self.scores(query, keys, projected_keys)  # (B, S)
        weights = masked_softmax(scores, mask)  # (B, S), rows sum to 1 over allowed keys
        context = (weights[:, :, None] * keys).sum(dim=1)  # (B, S, 1) * (B, S, Dk) -> (B, Dk)
        return context, weights


def check_query_and_keys(module: nn.Module, query, keys, mask, projected_keys) -> None:
    """Input checks shared by the attention modules of one query over a sequence of keys.

    ``module`` has ``query_dim``, ``key_dim`` and ``hidden_dim``; query must be
    (B, query_dim), keys (B, S, key_dim), mask boolean broadcastable to (B, S), and
    projected_keys, when given, (B, S, hidden_dim).
    """
    require_float(require_tensor(query, "query"), "query")
    require_float(require_tensor(keys, "keys"), "keys")
    if query.dim() != 2 or query.shape[-1] != module.query_dim:
        raise ValueError(f"query must have shape (B, query_dim={module.query_dim}), got shape {tuple(query.shape)}")
    if keys.dim() != 3 or keys.shape[-1] != module.key_dim:
        raise ValueError(f"keys must have shape (B, S, key_dim={module.key_dim}), got shape {tuple(keys.shape)}")
    if keys.shape[0] != query.shape[0]:
        raise ValueError(
            f"query (B, Dq) and keys (B, S, Dk) must have the same batch size B: "
            f"got query {tuple(query.shape)} and keys {tuple(keys.shape)}"
        )
    if keys.device != query.device:
        raise ValueError(f"query is on {query.device} but keys are on {keys.device}")
    if mask is not None:
        check_mask(mask, tuple(keys.shape[:2]), keys.device)
    if projected_keys is not None:
        require_tensor(projected_keys, "projected_keys")
        expected = (*keys.shape[:2], module.hidden_dim)
        if tuple(projected_keys.shape) != expected:
            raise ValueError(
                f"projected_keys must be project_keys(keys), of shape (B, S, hidden_dim) = {expected}; "
                f"got shape {tuple(projected_keys.shape)}"
            )
