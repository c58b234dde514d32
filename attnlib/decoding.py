"""Turning a trained encoder–decoder into translations: greedy decoding and beam search (lesson 09).

The decoder gives a distribution over the next token, given the source and the tokens
written so far. Writing a whole translation means choosing tokens one at a time:

* :func:`greedy_decode` takes the most likely token at every step. Cheap, and short-sighted:
  a likely first word may lead to an unlikely sentence.
* :func:`beam_search` keeps the ``beam_size`` best partial translations at every step
  (:func:`beam_step`), and returns the best finished one by the *score*
  ``log p(y | x) / lp(|y|)``, whose length penalty ``lp(n) = ((5 + n) / 6)^α`` (Wu et al.
  2016) offsets the log-probability's bias towards short outputs. The paper used 4 beams
  and α = 0.6.

Both encode once, decode the whole batch in parallel, stop each sequence at its ``EOS``,
and never write more than ``max_length`` tokens; neither ever writes ``PAD`` or ``BOS``.
They run in evaluation mode without gradients, and leave the model's mode as it was.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from .data.examples import BOS, EOS, PAD
from .transformer import padding_mask


@dataclass
class Hypotheses:
    """One translation per source sentence.

    * ``tokens`` (B, L) long: the written tokens, ``EOS`` included where one was written,
      ``PAD`` after it; L ≤ ``max_length``;
    * ``log_probs`` (B,): the sum of the log-probabilities of the written tokens, ``EOS`` included;
    * ``lengths`` (B,) long: the number of written tokens, ``EOS`` included;
    * ``scores`` (B,): ``log_probs / length_penalty(lengths, alpha)``, what beam search maximises.
    """

    tokens: torch.Tensor
    log_probs: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor

    @property
    def finished(self) -> torch.Tensor:
        """(B,) bool: True where the translation ended with ``EOS`` (False: it ran out of ``max_length``)."""
        return (self.tokens == EOS).any(dim=1)  # (B,)

    def sequences(self) -> list[tuple[int, ...]]:
        """Each translation as a tuple of token ids without ``EOS`` and ``PAD``, like ``Example.target``."""
        return [tuple(t for t in row if t not in (EOS, PAD)) for row in self.tokens.tolist()]


def length_penalty(length, alpha: float):
    """``((5 + length) / 6) ** alpha``, the GNMT length penalty; 1 for ``alpha = 0``. Works on numbers and tensors."""
    return ((5.0 + length) / 6.0) ** alpha


def beam_step(scores: torch.Tensor, log_probs: torch.Tensor, beam_size: int):
    """One step of beam search: the ``beam_size`` best one-token extensions of K hypotheses.

    ``scores`` (B, K): the hypotheses' running scores; ``log_probs`` (B, K, V): the score each
    next token would add. Candidate (k, v) scores ``scores[k] + log_probs[k, v]``; all K·V
    candidates compete, so two of the winners may extend the same hypothesis. Returns
    ``(new_scores, beams, tokens)``, each (B, beam_size), best first: the winners' scores,
    which hypothesis each extends, and the token it appends.
    """
    if not isinstance(scores, torch.Tensor) or not isinstance(log_probs, torch.Tensor):
        raise TypeError("scores and log_probs must be torch.Tensors")
    if scores.dim() != 2 or log_probs.dim() != 3 or log_probs.shape[:2] != scores.shape:
        raise ValueError(f"scores must be (B, K) and log_probs (B, K, V) with the same B and K: got "
                         f"{tuple(scores.shape)} and {tuple(log_probs.shape)}")
    vocab = log_probs.shape[2]
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or not 1 <= beam_size <= scores.shape[1] * vocab:
        raise ValueError(f"beam_size must be an int from 1 to K·V = {scores.shape[1] * vocab}, got {beam_size!r}")
    candidates = scores[:, :, None] + log_probs  # (B, K, V)
    best, index = candidates.flatten(1).topk(beam_size, dim=1)  # (B, beam_size): over all K·V candidates
    return best, index // vocab, index % vocab  # scores, source hypothesis, appended token


@torch.no_grad()
def greedy_decode(model, source: torch.Tensor, *, max_length: int | None = None, alpha: float = 0.6) -> Hypotheses:
    """Translate ``source`` (B, S) by taking the most likely token at every step.

    ``model`` has ``encode(source)`` and ``decode(target_input, memory, memory_mask)``, as
    :class:`attnlib.Transformer` does. ``max_length``: most tokens written (``EOS``
    included); default: the source length + 50, as in the paper. ``alpha`` only sets the
    length penalty of the returned ``scores``, so they compare with :func:`beam_search`'s.
    """
    max_length = _check(model, source, max_length, alpha)
    batch = source.shape[0]
    with _evaluating(model):
        memory, memory_mask = model.encode(source), padding_mask(source)  # (B, S, d_model), (B, 1, 1, S)
        written = source.new_full((batch, 1), BOS)  # (B, 1): the decoder's input so far
        log_probs = torch.zeros(batch, device=source.device)  # (B,)
        lengths = torch.zeros(batch, dtype=torch.long, device=source.device)  # (B,)
        finished = torch.zeros(batch, dtype=torch.bool, device=source.device)  # (B,)
        for _ in range(max_length):
            step = _next_token_log_probs(model.decode(written, memory, memory_mask)[:, -1])  # (B, V)
            best, token = step.max(dim=-1)  # (B,), (B,)
            token = token.masked_fill(finished, PAD)  # (B,): a finished sequence only pads
            log_probs += best.masked_fill(finished, 0.0)  # (B,)
            lengths += (~finished).long()  # (B,)
            written = torch.cat([written, token[:, None]], dim=1)  # (B, t + 1)
            finished |= token == EOS
            if bool(finished.all()):
                break
    return Hypotheses(written[:, 1:], log_probs, lengths, log_probs / length_penalty(lengths.float(), alpha))


@torch.no_grad()
def beam_search(model, source: torch.Tensor, *, beam_size: int = 4, max_length: int | None = None,
                alpha: float = 0.6, keep_greedy: bool = True) -> Hypotheses:
    """Translate ``source`` (B, S) with beam search: the best-scoring translation among ``beam_size`` kept.

    At every step each unfinished hypothesis is extended by every token, and the
    ``beam_size`` candidates with the best scores (log-probability over length penalty)
    survive, finished ones competing with their final scores; a hypothesis that writes
    ``EOS`` is finished and keeps its place while it is among the best. The search stops
    when every hypothesis is finished, when no unfinished one can still beat the best
    finished one (their log-probabilities can only fall), or at ``max_length``. With
    ``beam_size=1`` this is :func:`greedy_decode`.

    Beam search can, rarely, lose the greedy translation from its beam and end up with a
    worse one. ``keep_greedy=True`` (the default) also decodes greedily and keeps that
    translation where the beam found nothing better, so the result never scores below
    greedy decoding's. Arguments otherwise as for :func:`greedy_decode`; ``alpha >= 0``.
    """
    max_length = _check(model, source, max_length, alpha)
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}")
    if not isinstance(keep_greedy, bool):
        raise TypeError(f"keep_greedy must be True or False, got {keep_greedy!r}")
    batch, K, device = source.shape[0], beam_size, source.device
    rows = torch.arange(batch, device=device)  # (B,)
    # The best finished translation so far, per sentence: the greedy one, or none yet.
    best_tokens = torch.full((batch, max_length), PAD, dtype=torch.long, device=device)  # (B, max_length)
    best_log_probs = torch.zeros(batch, device=device)  # (B,)
    best_lengths = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
    best_scores = torch.full((batch,), -math.inf, device=device)  # (B,)
    if keep_greedy:
        greedy = greedy_decode(model, source, max_length=max_length, alpha=alpha)
        best_tokens[:, : greedy.tokens.shape[1]] = greedy.tokens
        best_log_probs, best_lengths, best_scores = greedy.log_probs, greedy.lengths, greedy.scores

    with _evaluating(model):
        memory = model.encode(source).repeat_interleave(K, dim=0)  # (B·K, S, d_model): one copy per hypothesis
        memory_mask = padding_mask(source).repeat_interleave(K, dim=0)  # (B·K, 1, 1, S)
        written = source.new_full((batch * K, 1), BOS)  # (B·K, 1)
        log_probs = torch.full((batch, K), -math.inf, device=device)  # (B, K): running log-probabilities
        log_probs[:, 0] = 0.0  # one real hypothesis to start from; the other K - 1 are placeholders
        lengths = torch.zeros(batch, K, dtype=torch.long, device=device)  # (B, K)
        finished = torch.zeros(batch, K, dtype=torch.bool, device=device)  # (B, K)
        final_penalty = length_penalty(float(max_length), alpha)
        for t in range(1, max_length + 1):
            step = _next_token_log_probs(model.decode(written, memory, memory_mask)[:, -1])  # (B·K, V)
            step = step.view(batch, K, -1)  # (B, K, V)
            penalty = length_penalty(float(t), alpha)  # every unfinished hypothesis now has t tokens
            carry = torch.full_like(step, -math.inf)  # (B, K, V)
            carry[..., PAD] = 0.0  # a finished hypothesis can only pad, at no cost
            increments = torch.where(finished[..., None], carry, step / penalty)  # (B, K, V)
            current = torch.where(finished, log_probs / length_penalty(lengths.float(), alpha),
                                  log_probs / penalty)  # (B, K): scores, before this step's token
            keys, beams, tokens = beam_step(current, increments, K)  # (B, K) each
            impossible = keys == -math.inf  # (B, K): fewer than K possible candidates (a tiny vocabulary)
            was_finished = finished.gather(1, beams) & ~impossible  # (B, K)
            tokens = tokens.masked_fill(was_finished | impossible, PAD)  # (B, K)
            chosen = step.flatten(1).gather(1, beams * step.shape[2] + tokens)  # (B, K): log p of the token
            log_probs = log_probs.gather(1, beams) + chosen.masked_fill(was_finished, 0.0)  # (B, K)
            log_probs = log_probs.masked_fill(impossible, -math.inf)  # (B, K): placeholders stay out of reach
            lengths = lengths.gather(1, beams) + (~was_finished).long()  # (B, K)
            finished = was_finished | (tokens == EOS)  # (B, K)
            history = written.view(batch, K, -1).gather(1, beams[..., None].expand(-1, -1, t))  # (B, K, t)
            written = torch.cat([history, tokens[..., None]], dim=2).view(batch * K, t + 1)  # (B·K, t + 1)

            scores = log_probs / length_penalty(lengths.float(), alpha)  # (B, K)
            new = torch.where(finished & ~was_finished, scores, -math.inf)  # (B, K): finished at this step
            new_best, which = new.max(dim=1)  # (B,), (B,)
            better = new_best > best_scores  # (B,)
            if bool(better.any()):
                chosen_rows = written.view(batch, K, -1)[rows, which, 1:]  # (B, t)
                best_tokens[better, :t] = chosen_rows[better]
                best_tokens[better, t:] = PAD
                best_scores = torch.where(better, new_best, best_scores)  # (B,)
                best_log_probs = torch.where(better, log_probs[rows, which], best_log_probs)  # (B,)
                best_lengths = torch.where(better, lengths[rows, which], best_lengths)  # (B,)
            reachable = torch.where(finished, -math.inf, log_probs / final_penalty).max(dim=1).values  # (B,)
            if bool((reachable <= best_scores).all()):  # nothing unfinished can win any more
                break

        # Sentences whose every hypothesis ran out of room: the best unfinished one.
        scores = torch.where(finished, -math.inf, log_probs / length_penalty(lengths.float(), alpha))  # (B, K)
        open_best, which = scores.max(dim=1)  # (B,)
        better = open_best > best_scores  # (B,)
        if bool(better.any()):
            chosen_rows = written.view(batch, K, -1)[rows, which, 1:]  # (B, t)
            best_tokens[better, : chosen_rows.shape[1]] = chosen_rows[better]
            best_tokens[better, chosen_rows.shape[1]:] = PAD
            best_scores = torch.where(better, open_best, best_scores)
            best_log_probs = torch.where(better, log_probs[rows, which], best_log_probs)
            best_lengths = torch.where(better, lengths[rows, which], best_lengths)
    longest = int(best_lengths.max()) if batch else 0
    return Hypotheses(best_tokens[:, :longest], best_log_probs, best_lengths, best_scores)


# ----- helpers ----------------------------------------------------------------------------------
def _next_token_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """(N, V) logits → (N, V) log-probabilities, with PAD and BOS made impossible to write."""
    step = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    step[:, [PAD, BOS]] = -math.inf  # the model's own probabilities elsewhere (not renormalised)
    return step


@contextlib.contextmanager
def _evaluating(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check(model, source, max_length, alpha) -> int:
    for method in ("encode", "decode"):
        if not callable(getattr(model, method, None)):
            raise TypeError(f"model must have an {method}() method, like attnlib.Transformer; got "
                            f"{type(model).__name__}")
    if not isinstance(source, torch.Tensor) or source.dtype not in (torch.long, torch.int32, torch.int64):
        raise TypeError(f"source must be a torch.Tensor of token ids (torch.long), got "
                        f"{getattr(source, 'dtype', type(source).__name__)}")
    if source.dim() != 2 or source.shape[1] == 0:
        raise ValueError(f"source must have shape (B, S) with S >= 1, got {tuple(source.shape)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha (the length penalty's exponent) must be a number >= 0, got {alpha!r}")
    if max_length is None:
        return source.shape[1] + 50  # the paper's "input length + 50"
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be an int >= 1 or None, got {max_length!r}")
    return max_length
