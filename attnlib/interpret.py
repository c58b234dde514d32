"""Looking inside a trained model (lesson 13): an attention-only transformer, two head scores, ablation.

The smallest model in which **induction heads** form (Olsson et al. 2022) has no MLPs:

    x_0 = E[tokens] + P[0 .. T-1]                  (B, T, d_model): the residual stream
    x_l+1 = x_l + Attn_l(LN_l(x_l)),  causal        (B, T, d_model), l = 0 .. L-1
    logits = LN_f(x_L) W_U + b_U                   (B, T, V)

(``LN`` only with ``layer_norm=True``; otherwise the identity.) Every head reads the
residual stream and adds its output to it, so a head of layer 1 can read what a head of
layer 0 wrote. That composition is what an induction head needs: layer 0 writes "the
token before me was A" into each position, and a layer-1 head whose query says "I am A"
finds the positions whose key says "the token before me was A", then copies the token
there.

Two scores find such heads from their attention weights ``A`` ``(B, H, T, T)`` (row t:
where query t looks):

* :func:`previous_token_score`: the mean of ``A[b, h, t, t-1]`` over sequences and queries
  ``t >= 1``: 1 for a head that always looks at the token just before;
* :func:`induction_score`: for query t, the *induction targets* are the positions j < t
  right after an earlier occurrence of the current token (``tokens[j-1] == tokens[t]``);
  the score is the weight the head puts on them, summed, averaged over the queries that
  have at least one target.

:func:`ablate_heads` switches heads off (their output zeroed before the output projection)
to test what they are needed for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ._validate import require_float, require_tensor
from .multi_head import MultiHeadAttention


class AttentionOnlyTransformer(nn.Module):
    """Token and learned position embeddings, ``num_layers`` causal attention layers, an unembedding.

    ``AttentionOnlyTransformer(vocab_size, max_len, d_model, num_heads, num_layers, *, layer_norm=False)``:
    ``embed`` ``(V, d_model)``, ``position`` ``(max_len, d_model)``, ``layers``: a ModuleList of
    :class:`~attnlib.MultiHeadAttention`, each added to the residual stream; ``unembed``:
    ``nn.Linear(d_model, V)``. No MLPs, so all the model computes between embedding and
    unembedding is attention. ``layer_norm=True`` puts a LayerNorm before each layer and the
    unembedding (pre-norm).

    ``forward(tokens, *, return_weights=False)``: tokens ``(B, T)`` int64, ``T <= max_len``
    → logits ``(B, T, V)``, where position t scores the token at t + 1; with
    ``return_weights=True``, also a list of every layer's attention weights ``(B, H, T, T)``.
    """

    def __init__(self, vocab_size: int, max_len: int, d_model: int, num_heads: int, num_layers: int, *,
                 layer_norm: bool = False):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("max_len", max_len), ("d_model", d_model),
                            ("num_heads", num_heads), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not isinstance(layer_norm, bool):
            raise TypeError(f"layer_norm must be True or False, got {layer_norm!r}")
        self.vocab_size, self.max_len, self.num_heads = vocab_size, max_len, num_heads
        self.embed = nn.Embedding(vocab_size, d_model)  # E: what each token is
        self.position = nn.Embedding(max_len, d_model)  # P: where it is
        self.layers = nn.ModuleList(MultiHeadAttention(d_model, num_heads) for _ in range(num_layers))
        norm = (lambda: nn.LayerNorm(d_model)) if layer_norm else nn.Identity
        self.norms = nn.ModuleList(norm() for _ in range(num_layers))
        self.final_norm = norm()
        self.unembed = nn.Linear(d_model, vocab_size)  # W_U: residual stream -> a score per token

    def forward(self, tokens: torch.Tensor, *, return_weights: bool = False):
        """tokens (B, T) → logits (B, T, V) [and a list of (B, H, T, T) weights, one per layer]."""
        self._check(tokens)
        length = tokens.shape[1]
        stream = self.embed(tokens) + self.position.weight[:length]  # (B, T, d_model)
        weights = []
        for norm, attention in zip(self.norms, self.layers):
            if return_weights:
                out, w = attention(norm(stream), causal=True, return_weights=True)  # (B, T, d), (B, H, T, T)
                weights.append(w)
            else:
                out = attention(norm(stream), causal=True)  # (B, T, d_model)
            stream = stream + out  # (B, T, d_model): each layer adds to the residual stream
        logits = self.unembed(self.final_norm(stream))  # (B, T, V)
        return (logits, weights) if return_weights else logits

    def _check(self, tokens) -> None:
        require_tensor(tokens, "tokens")
        if tokens.dtype not in (torch.int64, torch.int32) or tokens.dim() != 2:
            raise TypeError(f"tokens must be an integer (int64) tensor of shape (B, T), got dtype {tokens.dtype} "
                            f"and shape {tuple(tokens.shape)}")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens has T={tokens.shape[1]} positions but the model has positions for "
                             f"max_len={self.max_len} only")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"tokens must lie in [0, vocab_size={self.vocab_size}), got values from "
                             f"{int(tokens.min())} to {int(tokens.max())}")


# ----- scores from attention weights ----------------------------------------------------------
def previous_token_score(weights: torch.Tensor) -> torch.Tensor:
    """Per head, the mean attention from each query t >= 1 to position t - 1: (B, H, T, T) → (H,).

    1 for a head that always looks at the token just before the current one; about 2/(t+1)
    for a head that spreads its weight evenly over t + 1 keys.
    """
    _check_weights(weights)
    on_previous = weights.diagonal(offset=-1, dim1=-2, dim2=-1)  # (B, H, T-1): A[b, h, t, t-1], t = 1 .. T-1
    return on_previous.mean(dim=(0, 2))  # (H,)


def induction_targets(tokens: torch.Tensor) -> torch.Tensor:
    """``(B, T, T)`` bool: key j is an induction target of query t (j < t and tokens[j-1] == tokens[t]).

    Position j follows an earlier occurrence of the current token, so tokens[j] is what came
    next last time. Query 0, and a query whose token is new, have no target.
    """
    require_tensor(tokens, "tokens")
    if tokens.dim() != 2 or tokens.is_floating_point():
        raise TypeError(f"tokens must be an integer tensor of shape (B, T), got dtype {tokens.dtype} and shape "
                        f"{tuple(tokens.shape)}")
    length = tokens.shape[1]
    before = tokens.roll(1, dims=1)  # (B, T): tokens[j-1] at j (j = 0 wraps around and is excluded below)
    same = tokens[:, :, None] == before[:, None, :]  # (B, T, T): [b, t, j] = tokens[t] == tokens[j-1]
    allowed = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril(-1)  # (T, T): j < t
    allowed[:, 0] = False  # (T, T): and j >= 1, so that j - 1 exists
    return same & allowed  # (B, T, T)


def induction_score(weights: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per head, the attention on induction targets, averaged over queries that have one: → (H,).

    ``weights`` ``(B, H, T, T)``, ``tokens`` ``(B, T)``. For query t, the targets are the
    positions j < t with ``tokens[j-1] == tokens[t]`` (:func:`induction_targets`); the
    query's score is the sum of its weights on them. The result is the mean over every
    (sequence, query) pair with at least one target.
    """
    _check_weights(weights)
    require_tensor(tokens, "tokens")
    if tokens.dim() != 2 or tuple(tokens.shape) != (weights.shape[0], weights.shape[-1]):
        raise ValueError(f"tokens must have shape (B, T) = ({weights.shape[0]}, {weights.shape[-1]}) to go with "
                         f"weights of shape {tuple(weights.shape)}, got shape {tuple(tokens.shape)}")
    targets = induction_targets(tokens)  # (B, T, T)
    has_target = targets.any(dim=-1)  # (B, T)
    if not bool(has_target.any()):
        raise ValueError("no token of tokens occurs twice, so no query has an induction target: "
                         "score heads on sequences that repeat")
    on_targets = (weights * targets[:, None].to(weights.dtype)).sum(dim=-1)  # (B, H, T)
    chosen = has_target[:, None].expand_as(on_targets)  # (B, H, T)
    return (on_targets * chosen).sum(dim=(0, 2)) / has_target.sum()  # (H,)


def _check_weights(weights) -> None:
    require_float(require_tensor(weights, "weights"), "weights")
    if weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"weights must be self-attention weights of shape (B, H, T, T), got shape "
                         f"{tuple(weights.shape)}")


# ----- ablation ---------------------------------------------------------------------------------
@contextlib.contextmanager
def ablate_heads(model: nn.Module, heads: Iterable[tuple[int, int]]) -> Iterator[nn.Module]:
    """Inside the ``with`` block, the listed heads of ``model`` output zero; afterwards, as before.

    ``heads``: ``(layer, head)`` pairs, ``layer`` counting the
    :class:`~attnlib.MultiHeadAttention` modules of ``model`` in order. Zeroing head h's
    output before the output projection W_O is the same as zeroing the ``d_head`` columns
    of W_O that read it (``out = [head_1 | ... | head_H] W_Oᵀ + b``), which is what happens
    here; the bias, which belongs to no head, stays. The weights are restored on exit, even
    after an error.
    """
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not layers:
        raise ValueError(f"{type(model).__name__} holds no attnlib.MultiHeadAttention layer to ablate")
    chosen = []
    for pair in heads:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                and all(isinstance(i, int) and not isinstance(i, bool) for i in pair)):
            raise TypeError(f"heads must be (layer, head) pairs of ints, got {pair!r}")
        layer, head = pair
        if not (0 <= layer < len(layers) and 0 <= head < layers[layer].num_heads):
            raise ValueError(f"no head {pair!r}: the model has {len(layers)} attention layers (0 .. "
                             f"{len(layers) - 1}) with {[m.num_heads for m in layers]} heads")
        chosen.append((layer, head))
    saved = {layer: layers[layer].out_proj.weight.detach().clone() for layer, _ in chosen}  # (d_model, d_model)
    try:
        with torch.no_grad():
            for layer, head in chosen:
                d_head = layers[layer].d_head
                layers[layer].out_proj.weight[:, head * d_head : (head + 1) * d_head] = 0.0  # W_O reads head h: off
        yield model
    finally:
        with torch.no_grad():
            for layer, weight in saved.items():
                layers[layer].out_proj.weight.copy_(weight)
