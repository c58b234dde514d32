"""Additive (Bahdanau) attention (lesson 04).

Before dot-product attention became the default, Bahdanau, Cho and Bengio (2014) let a
decoder look back at the encoder with a tiny neural network as the scoring function:

    score(q, k_j) = tanh(q W_q + k_j W_k) · v

with row vectors q (query_dim,), k_j (key_dim,) and W_q (query_dim, A), W_k (key_dim, A),
v (A,), lesson 03's convention (``nn.Linear`` stores the transposes: W_q is
``query_proj.weight.T``). Query and key are each projected into a shared ``hidden_dim``
space A, added, squashed by tanh and read out by the vector ``v``. Because the two projections are separate,
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

    :class:`AdditiveAttention` adds v on top; ``attnlib.seq2seq.DotProductAttention``
    uses them as they are. Keeping them in one place keeps the two comparable. A
    subclass says how to score (``scores``); reading the keys with those scores is
    shared (``forward``, and ``attend_prepared`` for a decoder's every step).
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
        """k_j W_k for every key: (B, S, Dk) -> (B, S, A).

        A decoder attends to the same keys at every step; it can compute this once and
        pass it to ``forward`` as ``projected_keys`` instead of repeating it each step.
        """
        return self.key_proj(keys)  # (B, S, A)

    def scores(
        self, query: torch.Tensor, keys: torch.Tensor, projected_keys: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw scores of ``query`` (B, Dq) against ``keys`` (B, S, Dk): (B, S). Each scorer defines its own."""
        raise NotImplementedError

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        projected_keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (B, Dk) and weights (B, S) of ``query`` (B, Dq) over ``keys`` (B, S, Dk).

        ``mask`` (B, S) bool, True = may attend; ``projected_keys`` (B, S, A), optional:
        ``project_keys(keys)`` computed beforehand.
        """
        check_query_and_keys(self, query, keys, mask, projected_keys)
        scores = self.scores(query, keys, projected_keys)  # (B, S)
        weights = masked_softmax(scores, mask)  # (B, S), rows sum to 1 over allowed keys (all 0 if none)
        return _weighted_sum(weights, keys), weights  # (B, Dk), (B, S)

    def attend_prepared(
        self, query: torch.Tensor, keys: torch.Tensor, projected_keys: torch.Tensor, score_bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` for a decoder's every step, with the per-batch work done once by the caller.

        query (B, Dq), keys (B, S, Dk), ``projected_keys = project_keys(keys)`` (B, S, A) and
        ``score_bias`` (B, S): 0 where the query may attend, -inf elsewhere, with at least
        one 0 in every row (a decoder's source always has a real token). Nothing is
        checked, and the softmax is torch's own (the bias makes it a masked one): the same
        result as ``forward`` for such rows, at a fraction of the cost per step.
        """
        scores = self.scores(query, keys, projected_keys)  # (B, S)
        weights = torch.softmax(scores + score_bias, dim=-1)  # (B, S): exp(-inf) = 0 at the padding
        return _weighted_sum(weights, keys), weights  # (B, Dk), (B, S)

    def extra_repr(self) -> str:
        return f"query_dim={self.query_dim}, key_dim={self.key_dim}, hidden_dim={self.hidden_dim}"


def _weighted_sum(weights: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The context: weights (B, S) times keys (B, S, Dk), summed over S -> (B, Dk)."""
    return torch.bmm(weights.unsqueeze(1).to(keys.dtype), keys).squeeze(1)  # (B, 1, S) @ (B, S, Dk) -> (B, Dk)


class AdditiveAttention(QueryKeyProjections):
    """One query attends over a sequence of keys with Bahdanau's additive score.

    ``AdditiveAttention(query_dim, key_dim, hidden_dim)`` holds three learned pieces,
    none with a bias, so the module is exactly the formula above:

    * ``query_proj``: W_q, its weight ``(hidden_dim, query_dim)`` = W_qᵀ;
    * ``key_proj``: W_k, its weight ``(hidden_dim, key_dim)`` = W_kᵀ;
    * ``score``: v, its weight ``(1, hidden_dim)``.

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
        """Raw scores tanh(q W_q + k_j W_k) · v: query (B, Dq), keys (B, S, Dk) -> (B, S)."""
        projected_query = self.query_proj(query)  # (B, A)
        if projected_keys is None:
            projected_keys = self.project_keys(keys)  # (B, S, A)
        hidden = torch.tanh(projected_query[:, None, :] + projected_keys)  # (B, 1, A) + (B, S, A) -> (B, S, A)
        return self.score(hidden).squeeze(-1)  # (B, S, 1) -> (B, S)


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
