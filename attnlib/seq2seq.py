"""An RNN encoder–decoder (seq2seq), with or without attention (lesson 04).

The encoder, a GRU, reads the source left to right and leaves one state per token,
``h_j``. The decoder, a GRU cell, writes the target one token at a time. At every step
it reads a *context vector* ``c_t`` along with the previous token:

* ``attention="none"``: ``c_t`` is always the same vector, the encoder's final state
  (after the last real token). The whole source must squeeze through it: the bottleneck.
* ``attention="additive"``: ``c_t`` is a weighted average of all the ``h_j``, the
  weights chosen afresh at each step by Bahdanau's score tanh(s W_q + h_j W_k) · v
  between the decoder's previous state ``s`` and each ``h_j`` (:class:`AdditiveAttention`).
* ``attention="dot"``: the same, scored by the scaled dot product of the projections
  s W_q and h_j W_k (:class:`DotProductAttention`), as a Transformer scores queries
  against keys.

Everything else is identical in the three models, so comparing them is fair: the two
attentive models differ only in their scoring function (additive has ``v`` on top of the
same W_q and W_k), and the model without attention lacks only the scorer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ._validate import require_tensor
from .additive_attention import AdditiveAttention, QueryKeyProjections, check_query_and_keys
from .similarity import dot_product_scores
from .data import BOS, EOS, PAD

ATTENTION_KINDS = ("none", "additive", "dot")


class DotProductAttention(QueryKeyProjections):
    """One query attends over keys with the scaled dot product of learned projections.

    ``DotProductAttention(query_dim, key_dim, hidden_dim)`` scores key j by
    ``(q W_q) · (k_j W_k) / √hidden_dim``: lesson 02's scaled dot-product attention on
    lesson 03's projected queries and keys. Same interface and the same W_q and W_k as
    :class:`AdditiveAttention` (it lacks only ``v``): ``forward(query (B, Dq),
    keys (B, S, Dk), mask (B, S) or None) -> (context (B, Dk), weights (B, S))``, the
    context being the weighted sum of the (unprojected) keys.
    """

    def scores(
        self, query: torch.Tensor, keys: torch.Tensor, projected_keys: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw scores (q W_q)·(k_j W_k)/√A: query (B, Dq), keys (B, S, Dk) -> (B, S)."""
        projected_query = self.query_proj(query)[:, None, :]  # (B, 1, A)
        if projected_keys is None:
            projected_keys = self.project_keys(keys)  # (B, S, A)
        scale = 1.0 / math.sqrt(self.hidden_dim)
        return dot_product_scores(projected_query, projected_keys.to(projected_query.dtype), scale).squeeze(1)  # (B, S)


@dataclass
class EncoderMemory:
    """What the decoder may read about one batch of sources.

    * ``states`` (B, S, H): one encoder state per source position (zeros at padding);
    * ``mask`` (B, S) bool: True = real token;
    * ``summary`` (B, H): the encoder's final state, the only thing a decoder without
      attention ever sees;
    * ``projected`` (B, S, A) or None: h_j W_k, computed once per batch rather than
      once per decoder step (None without attention);
    * ``score_bias`` (B, S) or None: 0 at real tokens and -inf at padding, added to the
      scores at every step to mask them (None without attention; then the scorer's
      checked ``forward`` is used).
    """

    states: torch.Tensor
    mask: torch.Tensor
    summary: torch.Tensor
    projected: torch.Tensor | None = None
    score_bias: torch.Tensor | None = None


class Seq2Seq(nn.Module):
    """GRU encoder–decoder whose decoder uses no attention, additive or dot-product attention.

    ``Seq2Seq(vocab_size, embed_dim=..., hidden_dim=..., attention="none" | "additive" | "dot")``;
    ``attention_dim`` is the size of the scorers' projections (default ``hidden_dim``).
    Its parts: ``source_embedding``, ``encoder`` (nn.GRU), ``target_embedding``,
    ``decoder`` (nn.GRUCell, reading [previous token; context]), ``output`` (nn.Linear,
    reading [decoder state; context]) and, with attention, ``scorer``.

    * ``forward(source (B, S), source_mask (B, S), target_input (B, T)) -> logits (B, T, V)``
      with teacher forcing: step t reads the true previous token ``target_input[:, t]``.
    * ``greedy_decode(source, source_mask, max_length) -> (tokens (B, L), weights (B, L, S) or None)``
      feeds back its own most likely token.

    Source rows are real tokens followed by padding (``source_mask`` True = real token);
    padding never changes the outputs at real positions.

    ``forward`` computes what ``step`` computes, step after step, but does once per batch
    whatever does not depend on the step: the keys' projections, the embedding of every
    target token and its share of the decoder cell's input, and the output layer over all
    steps at once; without attention the context never changes, so the whole decoder is
    one call of torch's GRU with the cell's weights.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        embed_dim: int,
        hidden_dim: int,
        attention: str = "additive",
        attention_dim: int | None = None,
    ):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim), ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if vocab_size <= max(PAD, BOS, EOS):
            raise ValueError(f"vocab_size must be larger than the special tokens PAD, BOS, EOS; got {vocab_size}")
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
        if attention_dim is not None and (
            isinstance(attention_dim, bool) or not isinstance(attention_dim, int) or attention_dim < 1
        ):
            raise ValueError(f"attention_dim must be a positive int or None, got {attention_dim!r}")
        self.vocab_size, self.embed_dim, self.hidden_dim, self.attention = vocab_size, embed_dim, hidden_dim, attention

        self.source_embedding = nn.Embedding(vocab_size, embed_dim)
        self.encoder = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.target_embedding = nn.Embedding(vocab_size, embed_dim)
        self.decoder = nn.GRUCell(embed_dim + hidden_dim, hidden_dim)  # reads [previous token; context]
        self.output = nn.Linear(2 * hidden_dim, vocab_size)  # reads [decoder state; context]
        if attention == "additive":
            self.scorer = AdditiveAttention(hidden_dim, hidden_dim, attention_dim or hidden_dim)
        elif attention == "dot":
            self.scorer = DotProductAttention(hidden_dim, hidden_dim, attention_dim or hidden_dim)

    # ----- the three parts ------------------------------------------------------------
    def encode(self, source: torch.Tensor, source_mask: torch.Tensor) -> EncoderMemory:
        """Read a padded source (B, S): encoder states (B, S, H) and final state (B, H).

        The GRU reads each row left to right, padding included; since it only looks
        back, the states at the real tokens never see the padding that follows them.
        The final state is gathered after each row's last *real* token, and the states
        at the padding are set to zero.
        """
        states, _ = self.encoder(self.source_embedding(source))  # (B, S, H), the padding read too
        states = states * source_mask[:, :, None].to(states.dtype)  # (B, S, H), zeros at the padding
        last = source_mask.sum(dim=1) - 1  # (B,), position of each row's last real token
        summary = states[torch.arange(states.shape[0], device=states.device), last]  # (B, H)
        if self.attention == "none":
            return EncoderMemory(states, source_mask, summary)
        projected = self.scorer.project_keys(states)  # (B, S, A), once per batch
        score_bias = torch.zeros(source_mask.shape, dtype=torch.float32, device=source.device)  # (B, S)
        score_bias = score_bias.masked_fill(~source_mask, float("-inf"))  # (B, S): -inf at the padding
        return EncoderMemory(states, source_mask, summary, projected, score_bias)

    def context(self, state: torch.Tensor, memory: EncoderMemory) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The context (B, H) for the decoder's ``state`` (B, H), and the attention weights (B, S) or None."""
        if self.attention == "none":
            return memory.summary, None  # (B, H): the same scrap of paper at every step
        if memory.projected is None or memory.score_bias is None:  # a memory made by hand: the checked path
            return self.scorer(state, memory.states, memory.mask, projected_keys=memory.projected)
        return self.scorer.attend_prepared(state, memory.states, memory.projected, memory.score_bias)  # (B, H), (B, S)

    def step(
        self, token: torch.Tensor, state: torch.Tensor, memory: EncoderMemory
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One decoder step: previous token (B,), state (B, H) -> logits (B, V), new state (B, H), weights."""
        context, weights = self.context(state, memory)  # (B, H), (B, S) or None
        embedded = self.target_embedding(token)  # (B, E)
        state = self.decoder(torch.cat([embedded, context], dim=-1), state)  # (B, E + H) -> (B, H)
        logits = self.output(torch.cat([state, context], dim=-1))  # (B, 2H) -> (B, V)
        return logits, state, weights

    # ----- training and inference -----------------------------------------------------
    def forward(self, source: torch.Tensor, source_mask: torch.Tensor, target_input: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V): step t sees ``target_input[:, :t + 1]`` and the source."""
        self._check_source(source, source_mask)
        _check_tokens(target_input, "target_input", "(B, T)", self.vocab_size)
        if target_input.shape[0] != source.shape[0]:
            raise ValueError(
                f"source (B, S) and target_input (B, T) must have the same batch size: "
                f"got {tuple(source.shape)} and {tuple(target_input.shape)}"
            )
        if target_input.device != source.device:
            raise ValueError(f"source is on {source.device} but target_input is on {target_input.device}")
        memory = self.encode(source, source_mask)
        embedded = self.target_embedding(target_input)  # (B, T, E), every previous token at once
        if self.attention == "none":
            contexts = memory.summary[:, None, :].expand(-1, target_input.shape[1], -1)  # (B, T, H), one for all
            states = self._decoder_as_gru(torch.cat([embedded, contexts], dim=-1), memory.summary)  # (B, T, H)
        else:
            states, contexts = self._attentive_decoder(embedded, memory)  # (B, T, H), (B, T, H)
        return self.output(torch.cat([states, contexts], dim=-1))  # (B, T, 2H) -> (B, T, V)

    def _decoder_as_gru(self, inputs: torch.Tensor, first_state: torch.Tensor) -> torch.Tensor:
        """Run the decoder cell over inputs (B, T, E + H) from first_state (B, H): states (B, T, H).

        One call of torch's GRU, whose layer has the cell's four parameters under other
        names: the same numbers as calling ``self.decoder`` T times, without T Python steps.
        """
        layer = nn.GRU(inputs.shape[-1], self.hidden_dim, batch_first=True, device="meta")  # a shape, no numbers
        cell = self.decoder
        weights = {"weight_ih_l0": cell.weight_ih, "weight_hh_l0": cell.weight_hh,
                   "bias_ih_l0": cell.bias_ih, "bias_hh_l0": cell.bias_hh}
        with warnings.catch_warnings():  # cuDNN would like the four in one block of memory; they are small
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            states, _ = torch.func.functional_call(layer, weights, (inputs, first_state[None]))  # (B, T, H)
        return states

    def _attentive_decoder(self, embedded: torch.Tensor, memory: EncoderMemory) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced decoder states and contexts, (B, T, H) each, for embedded previous tokens (B, T, E).

        The cell's input [e(y_{t-1}); c_t] meets its input weights, stacked [W_e; W_c]: the part
        e(y_{t-1}) W_e + b is computed for all steps at once, only c_t W_c at each step.
        """
        cell, E = self.decoder, embedded.shape[-1]
        from_tokens = nn.functional.linear(embedded, cell.weight_ih[:, :E], cell.bias_ih).unbind(1)  # T × (B, 3H)
        weight_c = cell.weight_ih[:, E:]  # (3H, H), the context's share
        state = memory.summary  # (B, H): the decoder starts from the encoder's final state
        states, contexts = [], []
        for t in range(len(from_tokens)):
            context, _ = self.context(state, memory)  # (B, H): the previous state chooses where to look
            gates_in = from_tokens[t] + nn.functional.linear(context, weight_c)  # (B, 3H)
            state = _gru_update(gates_in, state, cell)  # (B, H)
            states.append(state)
            contexts.append(context)
        return torch.stack(states, dim=1), torch.stack(contexts, dim=1)  # (B, T, H), (B, T, H)

    @torch.no_grad()
    def greedy_decode(
        self, source: torch.Tensor, source_mask: torch.Tensor, max_length: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode by always feeding back the most likely next token.

        Returns ``tokens`` (B, L) and the attention ``weights`` (B, L, S) (None without
        attention), with L ≤ ``max_length``: decoding stops once every row has produced
        EOS. A row's tokens end with its EOS and are PAD after it (weights zero there).
        """
        self._check_source(source, source_mask)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        memory = self.encode(source, source_mask)
        state = memory.summary  # (B, H)
        token = torch.full((source.shape[0],), BOS, dtype=torch.long, device=source.device)  # (B,)
        finished = torch.zeros(source.shape[0], dtype=torch.bool, device=source.device)  # (B,)
        tokens, weights = [], []
        for _ in range(max_length):
            logits, state, step_weights = self.step(token, state, memory)  # (B, V), (B, H), (B, S)
            token = logits.argmax(dim=-1).masked_fill(finished, PAD)  # (B,)
            tokens.append(token)
            if step_weights is not None:
                weights.append(step_weights.float().masked_fill(finished[:, None], 0.0))  # (B, S)
            finished = finished | (token == EOS)  # (B,)
            if bool(finished.all()):
                break
        tokens = torch.stack(tokens, dim=1)  # (B, L)
        return tokens, (torch.stack(weights, dim=1) if weights else None)  # (B, L, S)

    def extra_repr(self) -> str:
        return f"attention={self.attention!r}"

    # ----- input checks ---------------------------------------------------------------
    def _check_source(self, source, source_mask) -> None:
        _check_tokens(source, "source", "(B, S)", self.vocab_size)
        require_tensor(source_mask, "source_mask")
        if source_mask.dtype != torch.bool:
            raise TypeError(f"source_mask must be a boolean tensor (True = real token), got dtype {source_mask.dtype}")
        if source_mask.shape != source.shape:
            raise ValueError(
                f"source_mask must have the shape of source (B, S) = {tuple(source.shape)}, "
                f"got {tuple(source_mask.shape)}"
            )
        if source_mask.device != source.device:
            raise ValueError(f"source is on {source.device} but source_mask is on {source_mask.device}")
        lengths = source_mask.sum(dim=1)  # (B,)
        if source.shape[0] == 0 or source.shape[1] == 0 or bool((lengths == 0).any()):
            raise ValueError(
                f"every source row needs at least one real token (a True in source_mask); got source of "
                f"shape {tuple(source.shape)} with {int((lengths == 0).sum())} empty row(s)"
            )
        positions = torch.arange(source.shape[1], device=source.device)  # (S,)
        if not torch.equal(source_mask, positions[None, :] < lengths[:, None]):
            raise ValueError(
                "source_mask must be True for the real tokens at the start of each row and False for the "
                "padding after them (right padding), e.g. [True, True, False]"
            )


def _gru_update(gates_in: torch.Tensor, state: torch.Tensor, cell: nn.GRUCell) -> torch.Tensor:
    """nn.GRUCell's update, given the input's share of the gates, gates_in (B, 3H) = W_ih x + b_ih.

    r = σ(i_r + h_r), z = σ(i_z + h_z), n = tanh(i_n + r ⊙ h_n), s' = (1 − z) ⊙ n + z ⊙ s,
    where [h_r, h_z, h_n] = W_hh s + b_hh: torch's equations, in torch's gate order.
    """
    from_state = nn.functional.linear(state, cell.weight_hh, cell.bias_hh)  # (B, 3H)
    i_r, i_z, i_n = gates_in.chunk(3, dim=-1)  # (B, H) each
    h_r, h_z, h_n = from_state.chunk(3, dim=-1)  # (B, H) each
    reset = torch.sigmoid(i_r + h_r)  # (B, H)
    update = torch.sigmoid(i_z + h_z)  # (B, H)
    candidate = torch.tanh(i_n + reset * h_n)  # (B, H)
    return candidate + update * (state - candidate)  # (B, H) = (1 − z) n + z s


def _check_tokens(tokens, name: str, layout: str, vocab_size: int) -> None:
    require_tensor(tokens, name)
    if tokens.dtype != torch.long:
        raise TypeError(f"{name} must hold token ids as a torch.long tensor, got dtype {tokens.dtype}")
    if tokens.dim() != 2:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(
            f"{name} holds token ids in [{int(tokens.min())}, {int(tokens.max())}], "
            f"but the vocabulary has ids 0..{vocab_size - 1}"
        )
