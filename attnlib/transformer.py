"""The encoder–decoder Transformer of "Attention Is All You Need" (lesson 09).

The paper's figure 1, in words. The **encoder** turns the source tokens into embeddings
(scaled by √d_model), adds the sinusoidal positions (lesson 07) and runs N encoder layers
(lesson 08): self-attention over the whole source, then a feed-forward network. Its
output, one vector per source token, is the *memory*. The **decoder** does the same with
the target tokens written so far, shifted right by one (``BOS`` first), through N decoder
layers: causal self-attention (no peeking at later target tokens), cross-attention from
every target position to the memory, a feed-forward network. A linear layer and a softmax
turn its output into a distribution over the next token.

* :class:`TransformerConfig`: the settings; ``TransformerConfig.base()`` and ``.big()``
  are the paper's two models.
* :func:`padding_mask` and :func:`target_mask`: the masks, built once per batch and used
  by every layer (True = may attend).
* :class:`Transformer`: ``model(source, target_input)`` → logits; ``encode`` and
  ``decode`` separately, for decoding one token at a time (:mod:`attnlib.decoding`).

The encoder and decoder stacks carry the parameter names of ``torch.nn.Transformer``'s
(``encoder.layers.0.self_attn.in_proj_weight`` ..., ``encoder.norm``, ``decoder.norm``),
so its weights load into ours; the tests prove the outputs equal.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from .attention import causal_mask
from .data.examples import PAD
from .layers import DecoderLayer, EncoderLayer
from .positions import sinusoidal_positional_encoding


# ----- configuration ------------------------------------------------------------------------
@dataclass(frozen=True)
class TransformerConfig:
    """Everything that shapes a :class:`Transformer`; the defaults are the paper's base model.

    * ``vocab_size``: tokens of the source (and of the target, unless ``target_vocab_size``);
    * ``share_embeddings``: one matrix for the source embedding, the target embedding and the
      pre-softmax projection (the paper's section 3.4); needs one shared vocabulary;
    * ``norm_first``: pre-norm layers (False: the paper's post-norm);
    * ``max_length``: the longest sequence the positional encoding covers;
    * ``pad_id``: the padding token, which the masks hide.
    """

    vocab_size: int
    d_model: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    activation: str = "relu"
    norm_first: bool = False
    share_embeddings: bool = True
    target_vocab_size: int | None = None
    max_length: int = 1024
    layer_norm_eps: float = 1e-5
    pad_id: int = PAD

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "num_heads", "num_encoder_layers", "num_decoder_layers", "d_ff",
                     "max_length"):
            _require_positive_int(getattr(self, name), name)
        if self.target_vocab_size is not None:
            _require_positive_int(self.target_vocab_size, "target_vocab_size")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if self.d_model % 2:
            raise ValueError(f"d_model must be even for the sinusoidal positions, got {self.d_model}")
        if self.share_embeddings and self.target_vocab_size not in (None, self.vocab_size):
            raise ValueError(f"share_embeddings=True needs one vocabulary, but vocab_size={self.vocab_size} and "
                             f"target_vocab_size={self.target_vocab_size}; use share_embeddings=False")
        if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int) or not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id must be a token id in [0, {self.vocab_size}), got {self.pad_id!r}")
        # the layers check dropout, activation and norm_first

    @property
    def output_vocab_size(self) -> int:
        """The number of tokens the decoder chooses from."""
        return self.vocab_size if self.target_vocab_size is None else self.target_vocab_size

    @classmethod
    def base(cls, vocab_size: int = 37_000, **changes) -> "TransformerConfig":
        """The paper's base model: d_model 512, 8 heads, 6 + 6 layers, d_ff 2048, dropout 0.1.

        37,000 tokens is the paper's shared byte-pair vocabulary for English–German.
        """
        return cls(vocab_size=vocab_size, **changes)

    @classmethod
    def big(cls, vocab_size: int = 37_000, **changes) -> "TransformerConfig":
        """The paper's big model: d_model 1024, 16 heads, 6 + 6 layers, d_ff 4096, dropout 0.3."""
        settings = dict(d_model=1024, num_heads=16, d_ff=4096, dropout=0.3)
        return cls(vocab_size=vocab_size, **{**settings, **changes})

    def replace(self, **changes) -> "TransformerConfig":
        """A copy with some settings changed, e.g. ``config.replace(dropout=0.0)``."""
        return dataclasses.replace(self, **changes)


# ----- masks ----------------------------------------------------------------------------------
def padding_mask(tokens: torch.Tensor, pad_id: int = PAD) -> torch.Tensor:
    """``(B, 1, 1, L)`` bool, True where ``tokens`` (B, L) is a real token: who may be attended to.

    It broadcasts over heads and queries: the encoder's self-attention and the decoder's
    cross-attention both use it for the source.
    """
    _check_tokens(tokens, "tokens")
    return (tokens != pad_id)[:, None, None, :]  # (B, 1, 1, L)


def target_mask(tokens: torch.Tensor, pad_id: int = PAD) -> torch.Tensor:
    """``(B, 1, T, T)`` bool for the decoder's self-attention over ``tokens`` (B, T).

    Query t may attend to key j when j ≤ t (causality: never the future) and token j is
    real (padding). Every query sees at least key 0 (``BOS``), so no row is empty.
    """
    _check_tokens(tokens, "tokens")
    causal = causal_mask(tokens.shape[1], tokens.device)  # (T, T): j ≤ t
    return padding_mask(tokens, pad_id) & causal  # (B, 1, 1, T) & (T, T) -> (B, 1, T, T)


# ----- the stacks -----------------------------------------------------------------------------
class Encoder(nn.Module):
    """N encoder layers and a final LayerNorm (as in ``torch.nn.TransformerEncoder``, under its names).

    ``forward(x (B, S, d_model), mask (B, 1, 1, S) or None, return_weights=False)`` → memory
    ``(B, S, d_model)``, or ``(memory, [self-attention weights (B, H, S, S) per layer])``.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            EncoderLayer(c.d_model, c.num_heads, c.d_ff, dropout=c.dropout, activation=c.activation,
                         norm_first=c.norm_first, layer_norm_eps=c.layer_norm_eps)
            for _ in range(c.num_encoder_layers))
        self.norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, return_weights: bool = False):
        weights = []
        for layer in self.layers:
            if return_weights:
                x, w = layer(x, mask=mask, return_weights=True)  # (B, S, d_model), (B, H, S, S)
                weights.append(w)
            else:
                x = layer(x, mask=mask)  # (B, S, d_model)
        x = self.norm(x)  # (B, S, d_model)
        return (x, weights) if return_weights else x


class Decoder(nn.Module):
    """N decoder layers and a final LayerNorm (as in ``torch.nn.TransformerDecoder``, under its names).

    ``forward(y (B, T, d_model), memory (B, S, d_model), mask (B, 1, T, T), memory_mask
    (B, 1, 1, S) or None, return_weights=False)`` → ``(B, T, d_model)``, or ``(output,
    [self weights (B, H, T, T)], [cross weights (B, H, T, S)])``, one entry per layer.
    ``mask`` must hold the causality (:func:`target_mask` builds it): it is used as given.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            DecoderLayer(c.d_model, c.num_heads, c.d_ff, dropout=c.dropout, activation=c.activation,
                         norm_first=c.norm_first, layer_norm_eps=c.layer_norm_eps)
            for _ in range(c.num_decoder_layers))
        self.norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor,
                memory_mask: torch.Tensor | None = None, return_weights: bool = False):
        self_weights, cross_weights = [], []
        for layer in self.layers:
            if return_weights:
                y, s, c = layer(y, memory, mask=mask, memory_mask=memory_mask, causal=False, return_weights=True)
                self_weights.append(s)  # (B, H, T, T)
                cross_weights.append(c)  # (B, H, T, S)
            else:
                y = layer(y, memory, mask=mask, memory_mask=memory_mask, causal=False)  # (B, T, d_model)
        y = self.norm(y)  # (B, T, d_model)
        return (y, self_weights, cross_weights) if return_weights else y


# ----- the model --------------------------------------------------------------------------------
class Transformer(nn.Module):
    """The encoder–decoder Transformer: ``Transformer(config)``, or ``Transformer.base()``.

    ``forward(source (B, S), target_input (B, T), return_weights=False)`` → logits ``(B, T,
    V)`` for the next token at every target position; with ``return_weights=True`` also a
    dict of the attention weights per layer: ``"encoder"`` (B, H, S, S), ``"decoder"``
    (B, H, T, T) and ``"cross"`` (B, H, T, S). Padding (``config.pad_id``) is found in the
    tokens and masked. For decoding, :meth:`encode` once and :meth:`decode` per step.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = c = config
        self.source_embedding = nn.Embedding(c.vocab_size, c.d_model)
        if c.share_embeddings:  # one matrix, three uses (the same Parameter object, counted once)
            self.target_embedding = self.source_embedding
        else:
            self.target_embedding = nn.Embedding(c.output_vocab_size, c.d_model)
            self.output = nn.Linear(c.d_model, c.output_vocab_size, bias=False)
        self.register_buffer("positions", sinusoidal_positional_encoding(c.max_length, c.d_model),
                             persistent=False)  # (max_length, d_model)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.reset_embeddings()

    @classmethod
    def base(cls, vocab_size: int = 37_000, **changes) -> "Transformer":
        """The paper's base model (see :meth:`TransformerConfig.base`)."""
        return cls(TransformerConfig.base(vocab_size, **changes))

    @classmethod
    def big(cls, vocab_size: int = 37_000, **changes) -> "Transformer":
        """The paper's big model (see :meth:`TransformerConfig.big`)."""
        return cls(TransformerConfig.big(vocab_size, **changes))

    def reset_embeddings(self) -> None:
        """Normal with standard deviation d_model^-0.5: after the √d_model scaling the inputs have unit size,
        and, shared with the output, the initial logits are of order one."""
        for module in (self.source_embedding, self.target_embedding, getattr(self, "output", None)):
            if module is not None:
                nn.init.normal_(module.weight, std=self.config.d_model**-0.5)

    def embed(self, tokens: torch.Tensor, embedding: nn.Embedding) -> torch.Tensor:
        """tokens (B, L) → embedding · √d_model + position, then dropout: (B, L, d_model)."""
        length = tokens.shape[1]
        if length > self.config.max_length:
            raise ValueError(f"sequences of {length} tokens are longer than config.max_length="
                             f"{self.config.max_length}, the positions the model knows")
        x = embedding(tokens) * math.sqrt(self.config.d_model)  # (B, L, d_model)
        return self.dropout(x + self.positions[:length])  # (B, L, d_model)

    def encode(self, source: torch.Tensor, return_weights: bool = False):
        """source (B, S) → memory (B, S, d_model) [, encoder weights per layer]."""
        self._check(source, "source", self.config.vocab_size)
        return self.encoder(self.embed(source, self.source_embedding), padding_mask(source, self.config.pad_id),
                            return_weights)

    def decode(self, target_input: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None,
               return_weights: bool = False):
        """target_input (B, T), memory (B, S, d_model), memory_mask (B, 1, 1, S) → logits (B, T, V).

        With ``return_weights=True``: ``(logits, self weights, cross weights)``, lists over layers.
        """
        self._check(target_input, "target_input", self.config.output_vocab_size)
        if memory.dim() != 3 or memory.shape[0] != target_input.shape[0] or memory.shape[2] != self.config.d_model:
            raise ValueError(f"memory must have shape (B, S, d_model) = ({target_input.shape[0]}, S, "
                             f"{self.config.d_model}), got {tuple(memory.shape)}")
        y = self.embed(target_input, self.target_embedding)  # (B, T, d_model)
        mask = target_mask(target_input, self.config.pad_id)  # (B, 1, T, T), built once for every layer
        decoded = self.decoder(y, memory, mask, memory_mask, return_weights)
        hidden = decoded[0] if return_weights else decoded  # (B, T, d_model)
        if self.config.share_embeddings:
            logits = hidden @ self.target_embedding.weight.T  # (B, T, d_model) @ (d_model, V) -> (B, T, V)
        else:
            logits = self.output(hidden)  # (B, T, V)
        return (logits, *decoded[1:]) if return_weights else logits

    def forward(self, source: torch.Tensor, target_input: torch.Tensor, return_weights: bool = False):
        self._check(source, "source", self.config.vocab_size)
        self._check(target_input, "target_input", self.config.output_vocab_size)
        if source.shape[0] != target_input.shape[0]:
            raise ValueError(f"source (B, S) and target_input (B, T) must share B: got {tuple(source.shape)} and "
                             f"{tuple(target_input.shape)}")
        memory_mask = padding_mask(source, self.config.pad_id)  # (B, 1, 1, S)
        if not return_weights:
            return self.decode(target_input, self.encode(source), memory_mask)  # (B, T, V)
        memory, encoder_weights = self.encode(source, return_weights=True)
        logits, self_weights, cross_weights = self.decode(target_input, memory, memory_mask, return_weights=True)
        return logits, {"encoder": encoder_weights, "decoder": self_weights, "cross": cross_weights}

    def _check(self, tokens, name: str, vocab_size: int) -> None:
        _check_tokens(tokens, name)
        if tokens.device.type != "meta" and tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
            raise ValueError(f"{name} holds token ids outside [0, {vocab_size}): min {tokens.min().item()}, "
                             f"max {tokens.max().item()}")

    def extra_repr(self) -> str:
        return f"parameters={sum(p.numel() for p in self.parameters()):,}"


def _check_tokens(tokens, name: str) -> None:
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(tokens).__name__}")
    if tokens.dtype not in (torch.long, torch.int32, torch.int64):
        raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {tokens.dtype}")
    if tokens.dim() != 2:
        raise ValueError(f"{name} must have shape (B, L), got shape {tuple(tokens.shape)}")


def _require_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
