"""GPT (lesson 10): a decoder-only Transformer that predicts the next token.

Take the Transformer's encoder layer, make its self-attention causal, put the layer norm
first (pre-norm), stack a few, and train the stack to predict token t + 1 from tokens
0 .. t at every position at once. That is the whole architecture of GPT-2:

    x = token_embedding(idx) + position_embedding(0 .. T-1)     (B, T, d_model)
    x = block(x) for each of n_layer blocks                     causal, pre-norm
    logits = LayerNorm(x) @ token_embedding.weightᵀ             (B, T, vocab_size)

The blocks are :class:`attnlib.EncoderLayer` (``norm_first=True``, GELU, ``causal=True``);
their self-attention is one fused QKV projection into torch's fused kernel. The output
layer shares its weights with the token embedding (*weight tying*), and the weights start
as in GPT-2: normal with std 0.02, the projections into the residual stream scaled down by
``1/√(2·n_layer)`` so the stream's variance does not grow with depth.

:meth:`GPT.generate` writes text token by token (greedy, temperature, top-k, top-p), with a
KV cache (lesson 11) so that each new token costs one token's work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import KVCache
from .layers import EncoderLayer
from .sampling import sample_next_token

_POSITIONS = ("learned", "rope", "alibi")


class GPT(nn.Module):
    """A GPT-2-style language model.

    ``GPT(vocab_size, block_size, n_layer, n_head, d_model, dropout=0.0, *, d_ff=None,
    bias=True, positions="learned", num_kv_heads=None)``: ``block_size`` is the longest
    context; ``d_ff`` defaults to ``4·d_model``; ``positions`` is ``"learned"`` (GPT-2's
    position embedding), ``"rope"`` or ``"alibi"`` (inside attention, lesson 07);
    ``num_kv_heads`` gives grouped-query attention (lesson 11).

    ``forward(idx (B, T) long, targets=None)`` → logits ``(B, T, vocab_size)``, or
    ``(logits, loss)`` with the mean cross-entropy of predicting ``targets`` ``(B, T)``.
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, d_model: int,
                 dropout: float = 0.0, *, d_ff: int | None = None, bias: bool = True, positions: str = "learned",
                 num_kv_heads: int | None = None):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("block_size", block_size), ("n_layer", n_layer),
                            ("n_head", n_head), ("d_model", d_model)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if positions not in _POSITIONS:
            raise ValueError(f"positions must be one of {_POSITIONS}, got {positions!r}")
        self.vocab_size, self.block_size, self.n_layer, self.positions = vocab_size, block_size, n_layer, positions
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(block_size, d_model) if positions == "learned" else None
        self.drop = nn.Dropout(dropout)
        options = {"num_kv_heads": num_kv_heads, "positions": None if positions == "learned" else positions}
        self.blocks = nn.ModuleList(
            EncoderLayer(d_model, n_head, 4 * d_model if d_ff is None else d_ff, dropout=dropout, activation="gelu",
                         norm_first=True, bias=bias, attention_options=options)
            for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model, bias=bias)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # weight tying: one matrix reads and writes tokens
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's initialisation: N(0, 0.02), residual projections N(0, 0.02/√(2·n_layer)), zero biases."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.normal_(block.self_attn.in_proj_weight, std=0.02)
            for projection in (block.self_attn.out_proj, block.linear2):  # what is added to the stream
                nn.init.normal_(projection.weight, std=0.02 / math.sqrt(2 * self.n_layer))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, caches=None):
        """idx (B, T) long → logits (B, T, vocab_size) [and the loss against targets (B, T)].

        ``caches`` (one :class:`KVCache` per block) makes ``idx`` the new tokens after the cached ones.
        """
        offset = self._check(idx, targets, caches)
        logits = self._logits(idx, caches, offset)  # (B, T, vocab_size)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # mean over B·T predictions
        return logits, loss

    def _logits(self, idx: torch.Tensor, caches, offset: int) -> torch.Tensor:
        """The forward pass proper, inputs already checked: idx (B, T) → logits (B, T, vocab_size)."""
        x = self.token_embedding(idx)  # (B, T, d_model)
        if self.position_embedding is not None:
            positions = torch.arange(offset, offset + idx.shape[1], device=idx.device)  # (T,)
            x = x + self.position_embedding(positions)  # (B, T, d_model) + (T, d_model)
        if self.training and self.drop.p > 0:
            x = self.drop(x)  # (B, T, d_model)
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True, cache=None if caches is None else caches[i])  # (B, T, d_model)
        return self.lm_head(self.norm(x))  # (B, T, vocab_size)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue ``idx`` (B, T) by ``max_new_tokens`` tokens → (B, T + max_new_tokens).

        ``temperature=0`` is greedy; otherwise sampling with ``top_k``/``top_p`` filtering
        (:func:`attnlib.sampling.sample_next_token`). The model sees at most the last
        ``block_size`` tokens. With ``use_cache`` each step runs only the newest token against
        the cached keys and values; once the text is longer than ``block_size`` every position
        of the window shifts, so from then on each step recomputes its window (the tokens are
        the same with and without the cache, only the speed differs).
        """
        self._check(idx, None, None, check_length=False)  # a longer prompt is cropped, below
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if idx.shape[1] == 0:
            raise ValueError("idx must hold at least one token to continue, got shape "
                             f"{tuple(idx.shape)}; start from e.g. a newline token")
        sample_next_token(torch.zeros(1, 1), temperature=temperature, top_k=top_k, top_p=top_p)  # checks arguments
        was_training = self.training
        self.eval()
        caches = None
        try:
            for _ in range(max_new_tokens):
                if use_cache and idx.shape[1] <= self.block_size:
                    if caches is None:  # the prompt: one pass fills every block's cache
                        caches = [KVCache(self.block_size) for _ in self.blocks]
                        logits = self(idx, caches=caches)  # (B, T, V)
                    else:  # one new token against everything cached (a token we made: no need to check it)
                        logits = self._logits(idx[:, -1:], caches, caches[0].length)  # (B, 1, V)
                else:
                    logits = self(idx[:, -self.block_size:])  # (B, ≤ block_size, V): the cropped window
                next_token = sample_next_token(logits[:, -1], temperature=temperature, top_k=top_k, top_p=top_p,
                                               generator=generator)  # (B,)
                idx = torch.cat([idx, next_token[:, None]], dim=1)  # (B, T + 1)
        finally:
            self.train(was_training)
        return idx

    def num_parameters(self) -> int:
        """The number of distinct parameters (the tied output matrix counted once)."""
        return sum(p.numel() for p in self.parameters())

    def _check(self, idx, targets, caches, check_length: bool = True) -> int:
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long or idx.dim() != 2:
            got = f"{idx.dtype} tensor of shape {tuple(idx.shape)}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise TypeError(f"idx must be a (B, T) tensor of token ids (torch.long), got {got}")
        offset = 0 if caches is None else caches[0].length
        if check_length and offset + idx.shape[1] > self.block_size:
            raise ValueError(f"this model reads at most block_size={self.block_size} tokens, got {idx.shape[1]}"
                             + (f" after {offset} cached" if offset else "") + "; crop the context, e.g. "
                             f"idx[:, -{self.block_size}:]")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, vocab_size={self.vocab_size}), got ids from "
                             f"{int(idx.min())} to {int(idx.max())}")
        if targets is not None and (not isinstance(targets, torch.Tensor) or targets.shape != idx.shape):
            shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ValueError(f"targets must have idx's shape {tuple(idx.shape)}, got {shape}")
        if caches is not None and len(caches) != len(self.blocks):
            raise ValueError(f"caches must hold one KVCache per block ({len(self.blocks)}), got {len(caches)}")
        return offset
