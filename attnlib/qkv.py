"""Learned queries, keys and values (lesson 03).

Attention compares queries with keys and hands over values. Raw token vectors could
play all three roles, but one vector would then have to say at once what a token is
looking for, what it can be found by, and what it passes on. Three learned linear maps
separate the roles:

    q = x_q W_Q      (what I am looking for)
    k = x_kv W_K     (what I advertise, to be matched)
    v = x_kv W_V     (what I hand over when I am chosen)

``QKVProjection`` holds the three maps; ``attend`` runs scaled dot-product attention
on their outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from ._validate import autocast_enabled, require_float, require_min_dims, require_tensor
from .attention import scaled_dot_product_attention


class QKVProjection(nn.Module):
    """Project inputs of width ``d_model`` to queries and keys of width ``d_k``, values of ``d_v``.

    ``w_q``, ``w_k``, ``w_v`` are ``nn.Linear`` layers. Like every ``nn.Linear``, each
    stores its matrix transposed: ``w_q.weight`` has shape ``(d_k, d_model)`` and
    ``q = x @ w_q.weight.T`` (+ bias), i.e. ``W_Q = w_q.weight.T`` of shape ``(d_model, d_k)``.
    ``d_v`` defaults to ``d_k``. No bias by default, as in the Transformer paper.
    """

    def __init__(self, d_model: int, d_k: int, d_v: int | None = None, bias: bool = False):
        super().__init__()
        for name, value in (("d_model", d_model), ("d_k", d_k), ("d_v", d_v if d_v is not None else d_k)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.d_model = d_model
        self.d_k = d_k
        self.d_v = d_v if d_v is not None else d_k
        self.w_q = nn.Linear(d_model, d_k, bias=bias)
        self.w_k = nn.Linear(d_model, d_k, bias=bias)
        self.w_v = nn.Linear(d_model, self.d_v, bias=bias)

    def forward(self, queries_from: torch.Tensor, keys_values_from: torch.Tensor | None = None):
        """Return ``(q, k, v)``.

        queries_from ``(B, Lq, d_model)``: the positions that ask;
        keys_values_from ``(B, Lk, d_model)``: the positions that answer; None means
        the same tensor as ``queries_from`` (self-attention, lesson 05).
        → q ``(B, Lq, d_k)``, k ``(B, Lk, d_k)``, v ``(B, Lk, d_v)``. Any leading
        dimensions work in place of ``B``.
        """
        if keys_values_from is None:
            keys_values_from = queries_from
        self._check(queries_from, "queries_from", "(B, Lq, d_model)")
        self._check(keys_values_from, "keys_values_from", "(B, Lk, d_model)")
        try:
            torch.broadcast_shapes(queries_from.shape[:-2], keys_values_from.shape[:-2])
        except RuntimeError:
            raise ValueError(
                f"the batch dimensions of queries_from {tuple(queries_from.shape)} and keys_values_from "
                f"{tuple(keys_values_from.shape)} do not match"
            ) from None
        if queries_from.device != keys_values_from.device:
            raise ValueError(
                f"queries_from is on {queries_from.device} but keys_values_from is on {keys_values_from.device}"
            )
        q = self.w_q(queries_from)  # (B, Lq, d_model) -> (B, Lq, d_k)
        k = self.w_k(keys_values_from)  # (B, Lk, d_model) -> (B, Lk, d_k)
        v = self.w_v(keys_values_from)  # (B, Lk, d_model) -> (B, Lk, d_v)
        return q, k, v

    def attend(
        self,
        queries_from: torch.Tensor,
        keys_values_from: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        causal: bool = False,
        return_weights: bool = False,
    ):
        """Project, then attend: ``softmax(q kᵀ / √d_k) v``.

        Shapes as in :meth:`forward`; ``mask`` is boolean, broadcastable to
        ``(B, Lq, Lk)``, True = may attend. Returns the output ``(B, Lq, d_v)``, or
        ``(output, weights (B, Lq, Lk))`` when ``return_weights=True``.
        """
        q, k, v = self(queries_from, keys_values_from)  # (B, Lq, d_k), (B, Lk, d_k), (B, Lk, d_v)
        return scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=return_weights)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_k={self.d_k}, d_v={self.d_v}, bias={self.w_q.bias is not None}"

    def _check(self, x, name: str, layout: str) -> None:
        require_tensor(x, name)
        require_float(x, name)
        require_min_dims(x, name, 2, layout)
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"{name} must have shape {layout} with d_model={self.d_model} as its last dimension, "
                f"got shape {tuple(x.shape)}"
            )
        if x.dtype != self.w_q.weight.dtype and not autocast_enabled(x.device.type):
            raise TypeError(
                f"{name} has dtype {x.dtype} but the projection's weights are {self.w_q.weight.dtype}; "
                f"convert one of them (e.g. x.to({self.w_q.weight.dtype}))"
            )
