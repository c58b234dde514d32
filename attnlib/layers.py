"""The Transformer's layers (lesson 08): attention and a feed-forward network, each in a residual block.

A layer never replaces its input; it adds to it. The running sum is the *residual stream*:

    post-norm (the 2017 paper):  x = LayerNorm(x + Dropout(Sublayer(x)))
    pre-norm  (GPT-2 and later): x = x + Dropout(Sublayer(LayerNorm(x)))

An encoder layer has two sublayers, self-attention and the position-wise feed-forward
network ``FFN(x) = W_2 · activation(W_1 x + b_1) + b_2`` (width d_model → d_ff → d_model,
the same small network at every position). A decoder layer puts cross-attention to the
encoder's output (the *memory*) between the two.

The parts carry the names of ``torch.nn.TransformerEncoderLayer`` / ``DecoderLayer``'s
(``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``, ``norm1`` ...), so weights
copy between them with ``load_state_dict``; the tests prove the outputs equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .multi_head import MultiHeadAttention

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class _ResidualLayer(nn.Module):
    """What encoder and decoder layers share: settings, the feed-forward network, the norm placement."""

    def __init__(self, d_model, num_heads, d_ff, dropout, activation, norm_first, layer_norm_eps, bias, norms,
                 attention_options=None):
        super().__init__()
        for name, value in (("d_model", d_model), ("num_heads", num_heads), ("d_ff", d_ff)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not isinstance(norm_first, bool):
            raise TypeError(f"norm_first must be True or False, got {norm_first!r}")
        self.d_model, self.norm_first, self.activation_name = d_model, norm_first, activation
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout, bias=bias, **(attention_options or {}))
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)  # W_1: d_model -> d_ff
        self.dropout = nn.Dropout(dropout)  # inside the feed-forward network
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)  # W_2: d_ff -> d_model
        for i in range(1, norms + 1):
            setattr(self, f"norm{i}", nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
            setattr(self, f"dropout{i}", nn.Dropout(dropout))  # on each sublayer's output

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """FFN(x) = W_2 · dropout(activation(W_1 x + b_1)) + b_2, position by position: (B, L, d) -> (B, L, d)."""
        hidden = _ACTIVATIONS[self.activation_name](self.linear1(x))  # (B, L, d_ff)
        return self.linear2(self.dropout(hidden))  # (B, L, d_model)

    def residual(self, x: torch.Tensor, sublayer, norm: nn.LayerNorm, dropout: nn.Dropout) -> torch.Tensor:
        """Add ``sublayer``'s output to the stream ``x`` (B, L, d_model), normalising before or after."""
        if self.norm_first:
            return x + dropout(sublayer(norm(x)))  # pre-norm: the stream itself is never normalised
        return norm(x + dropout(sublayer(x)))  # post-norm: normalise the sum

    @staticmethod
    def attend(attention, queries, keys, mask, causal, weights: list | None, cache=None):
        """Run one attention sublayer; with a list for ``weights``, append its weights (B, H, Lq, Lk) to it."""
        if weights is None:
            return attention(queries, keys, mask=mask, causal=causal, cache=cache)  # (B, Lq, d_model)
        out, w = attention(queries, keys, mask=mask, causal=causal, return_weights=True,
                           cache=cache)  # (B, Lq, d), (B, H, Lq, Lk)
        weights.append(w)
        return out

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}, activation={self.activation_name!r}"


class EncoderLayer(_ResidualLayer):
    """Self-attention and a feed-forward network, each in a residual block.

    ``EncoderLayer(d_model, num_heads, d_ff, *, dropout=0.1, activation="relu",
    norm_first=False, layer_norm_eps=1e-5, bias=True)``; the defaults are the paper's
    post-norm layer (and torch's). ``forward(x (B, L, d_model), *, mask=None,
    causal=False, return_weights=False)``: ``mask`` boolean, broadcastable to
    ``(B, num_heads, L, L)``, True = may attend (key padding: ``(B, 1, 1, L)``);
    ``causal=True`` hides the future (a GPT block is a causal pre-norm encoder layer).
    Returns ``(B, L, d_model)``, or ``(output, weights (B, num_heads, L, L))``.

    ``attention_options`` go to the self-attention's :class:`MultiHeadAttention` (e.g.
    ``{"positions": "rope", "num_kv_heads": 2}``), and ``forward(..., cache=KVCache(...))``
    hands it a KV cache (then ``x`` holds only the new tokens).
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False, layer_norm_eps: float = 1e-5,
                 bias: bool = True, attention_options: dict | None = None):
        super().__init__(d_model, num_heads, d_ff, dropout, activation, norm_first, layer_norm_eps, bias, norms=2,
                         attention_options=attention_options)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, causal: bool = False,
                return_weights: bool = False, cache=None):
        weights = [] if return_weights else None
        attend_self = lambda h: self.attend(self.self_attn, h, h, mask, causal, weights, cache)  # noqa: E731
        x = self.residual(x, attend_self, self.norm1, self.dropout1)  # (B, L, d_model)
        x = self.residual(x, self.feed_forward, self.norm2, self.dropout2)  # (B, L, d_model)
        return (x, weights[0]) if return_weights else x


class DecoderLayer(_ResidualLayer):
    """Causal self-attention, cross-attention to the memory, and a feed-forward network.

    Arguments as for :class:`EncoderLayer`. ``forward(x (B, T, d_model), memory (B, S,
    d_model), *, mask=None, memory_mask=None, causal=True, return_weights=False)``:
    ``mask`` (broadcastable to ``(B, num_heads, T, T)``) limits the self-attention, with
    ``causal`` on by default; ``memory_mask`` (broadcastable to ``(B, num_heads, T, S)``,
    e.g. the source padding ``(B, 1, 1, S)``) limits the cross-attention. Returns
    ``(B, T, d_model)``, or ``(output, self_weights (B, H, T, T), cross_weights (B, H, T, S))``.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False, layer_norm_eps: float = 1e-5,
                 bias: bool = True):
        super().__init__(d_model, num_heads, d_ff, dropout, activation, norm_first, layer_norm_eps, bias, norms=3)
        self.multihead_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout, bias=bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, *, mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, causal: bool = True, return_weights: bool = False):
        weights = [] if return_weights else None
        attend_self = lambda h: self.attend(self.self_attn, h, h, mask, causal, weights)  # noqa: E731
        attend_memory = lambda h: self.attend(self.multihead_attn, h, memory, memory_mask, False, weights)  # noqa: E731
        x = self.residual(x, attend_self, self.norm1, self.dropout1)  # (B, T, d_model)
        x = self.residual(x, attend_memory, self.norm2, self.dropout2)  # (B, T, d_model)
        x = self.residual(x, self.feed_forward, self.norm3, self.dropout3)  # (B, T, d_model)
        return (x, weights[0], weights[1]) if return_weights else x
