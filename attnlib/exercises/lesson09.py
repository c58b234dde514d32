"""Exercises of lesson 09 (the encoder–decoder Transformer).

9.1 ``target_mask``: the decoder's self-attention mask from padding and causality, ``(B, 1, T, T)``,
    written from its contract (the lesson builds only the source's padding mask).
9.2 ``beam_step``: one step of beam search: the best extensions of K hypotheses among all K·V
    candidates, with the hypothesis each extends and the token it appends.
9.3 ``warmup_landmarks``: where the paper's learning-rate schedule peaks, how high, and when it has
    fallen to half its peak, derived from the formula and checked against ``transformer_lr``.

Each checker first looks for the classic mistakes (the mask's convention or its axes the wrong way
round, candidates ranked per hypothesis, the flat index split by K instead of V, a decay taken for
linear) and names them.
"""

from __future__ import annotations

import math
import operator

import torch

from ._core import Exercise, Failure, Trial, close, comparable


# ----- 9.1 the target mask -----------------------------------------------------------------------
def _reference_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    length = tokens.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()  # (T, T)
    return (tokens != pad_id)[:, None, None, :] & causal  # (B, 1, T, T)


def _tokens(t: Trial, lengths, width, pad_id, low=3, high=20):
    ids = t.randint(low, high, (len(lengths), width))  # (B, T)
    ids = torch.where(ids == pad_id, ids + 1, ids)  # no accidental padding inside a sentence
    real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    return ids.masked_fill(~real, pad_id)


def _test_target_mask(t: Trial, target_mask) -> None:
    for pad_id, lengths in ((0, (6, 4, 1)), (7, (5, 6, 2))):
        tokens = _tokens(t, lengths, 6, pad_id)  # (B, T) = (3, 6)
        what = f"target_mask(tokens, pad_id={pad_id}) for tokens of shape (B, T) = (3, 6)"
        got = t.call(target_mask, tokens, pad_id, what="target_mask")
        expected = _reference_mask(tokens, pad_id)  # (B, 1, T, T)
        if isinstance(got, torch.Tensor):
            _name_shape_mistakes(got, what)
            if got.dtype != torch.bool:
                raise Failure(f"{what} has dtype {got.dtype}; a mask is boolean (True = may attend). Build it from "
                              "comparisons and combine them with &.")
            if tuple(got.shape) == tuple(expected.shape) and not torch.equal(got, expected):
                _name_value_mistakes(got, tokens, pad_id, expected, what)
        t.expect_tensor(got, expected, what)


def _name_shape_mistakes(got: torch.Tensor, what: str) -> None:
    shape = tuple(got.shape)
    if shape == (3, 6, 6):
        raise Failure(f"{what} has shape {shape}; add the head axis, (B, 1, T, T), so that the mask broadcasts over "
                      "the heads' scores (B, H, T, T).")
    if shape == (3, 1, 1, 6) or shape == (3, 6):
        raise Failure(f"{what} has shape {shape}: that is the padding alone. The decoder must not see the future "
                      "either: combine it with the causal (T, T) mask, giving (B, 1, T, T).")
    if shape == (6, 6):
        raise Failure(f"{what} has shape {shape}: that is causality alone, the same for every sentence. Each "
                      "sentence's padding must be hidden too: combine it with (tokens != pad_id), giving (B, 1, T, T).")


def _name_value_mistakes(got, tokens, pad_id, expected, what) -> None:
    length = tokens.shape[1]
    real = tokens != pad_id  # (B, T)
    lower = torch.ones(length, length, dtype=torch.bool).tril()  # (T, T)
    mistakes = (
        (~expected, "has every value the wrong way round: True must mean *may attend* (torch.nn.MultiheadAttention "
         "uses the opposite convention; attnlib and F.scaled_dot_product_attention use this one)"),
        (real[:, None, None, :] & lower.T, "lets each position see the future and hides the past: key j is allowed "
         "for query t when j <= t, the lower triangle (tril), not the upper one"),
        (real[:, None, None, :] & lower.tril(-1), "hides the diagonal: a position may attend to itself (j <= t, "
         "not j < t), or the first query would see nothing at all"),
        (real[:, None, :, None] & lower, "hides padded *queries* (rows): a padded query then attends to nothing, "
         "whose softmax is 0/0 (NaN in torch's kernels). Padding must not be *looked at*, so mask the keys "
         "(columns): the padding mask varies along the last axis, (B, 1, 1, T); the loss ignores what padded "
         "positions output"),
        (lower.expand_as(expected), "ignores the padding: keys that are padding must be hidden too"),
        (real[:, None, None, :].expand_as(expected), "ignores causality: a query must not see later keys"),
    )
    if pad_id != 0 and torch.equal(got, _reference_mask(tokens, 0)):  # right for pad_id=0, checked first
        raise Failure(f"{what} looks for padding as token 0; use the pad_id argument ({pad_id} here).")
    for wrong, message in mistakes:
        if torch.equal(got, wrong):
            raise Failure(f"{what} {message}.")


target_mask = Exercise(
    number="9.1",
    title="the target mask",
    test=_test_target_mask,
    hints=[
        "Two conditions must both hold for query t to attend to key j: j comes at or before t (causality), and token "
        "j is real, not padding. Build each as a boolean tensor and combine them with `&`; broadcasting makes the "
        "(B, 1, T, T) result.",
        "Causality is the (T, T) lower triangle: `torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()`. "
        "Padding is `tokens != pad_id`, (B, T); it describes the *keys*, the last axis, so reshape it to (B, 1, 1, T).",
        "padding = (tokens != pad_id)[:, None, None, :]  # (B, 1, 1, T): True where key j is a real token",
    ],
    success="causal and padding in one (B, 1, T, T) mask, True = may attend, every query left something to see.",
)


# ----- 9.2 one step of beam search ------------------------------------------------------------------
def _reference_step(scores, log_probs, beam_size):
    vocab = log_probs.shape[2]
    best, index = (scores[:, :, None] + log_probs).flatten(1).topk(beam_size, dim=1)  # (B, beam_size)
    return best, index // vocab, index % vocab


def _test_beam_step(t: Trial, beam_step) -> None:
    for B, K, V, beam_size in ((2, 3, 5, 3), (3, 4, 6, 2), (2, 1, 7, 4), (1, 2, 4, 8)):
        scores = -t.rand(B, K) * 5  # (B, K): running log-probabilities
        log_probs = torch.log_softmax(t.randn(B, K, V) * 2, dim=-1)  # (B, K, V)
        what = f"beam_step(scores (B, K) = {(B, K)}, log_probs (B, K, V) = {(B, K, V)}, beam_size={beam_size})"
        got = t.call(beam_step, scores, log_probs, beam_size, what="beam_step")
        new, beams, tokens = _reference_step(scores, log_probs, beam_size)
        if got is None:
            raise Failure(f"{what} returned None. Did your function forget to `return` its three results?")
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise Failure(f"{what} returned a {type(got).__name__}; expected three tensors: (new_scores, beams, "
                          "tokens).")
        got_scores, got_beams, got_tokens = got
        if isinstance(got_scores, torch.Tensor) and tuple(got_scores.shape) == (B, K, min(beam_size, V)) and K > 1:
            raise Failure(f"{what} gives new scores of shape {tuple(got_scores.shape)}: it ranks each hypothesis's "
                          f"tokens separately. All K·V candidates compete for the {beam_size} places, so two winners "
                          "may extend the same hypothesis and another hypothesis none: flatten (K, V) before topk.")
        t.expect_tensor(got_scores, new, f"the new scores of {what}", check_dtype=False)
        for name, value, reference in (("beams", got_beams, beams), ("tokens", got_tokens, tokens)):
            if not isinstance(value, torch.Tensor) or value.is_floating_point():
                raise Failure(f"the {name} of {what} must be a tensor of integer indices (torch.long), got "
                              f"{getattr(value, 'dtype', type(value).__name__)}.")
        _name_index_mistakes(got_beams, got_tokens, beams, tokens, scores, log_probs, K, V, what)
        t.expect_tensor(got_beams, beams, f"the beams (which hypothesis each winner extends) of {what}")
        t.expect_tensor(got_tokens, tokens, f"the tokens of {what}")


def _name_index_mistakes(got_beams, got_tokens, beams, tokens, scores, log_probs, K, V, what) -> None:
    if got_beams.shape != beams.shape or got_tokens.shape != tokens.shape:
        return
    if torch.equal(got_beams, tokens) and torch.equal(got_tokens, beams) and not torch.equal(beams, tokens):
        raise Failure(f"{what} returns the tokens where the beams belong and the other way round: the order is "
                      "(new_scores, beams, tokens).")
    flat = beams * V + tokens  # (B, beam_size): the candidates' flat indices
    if K != V and torch.equal(got_beams, flat // K) and not torch.equal(got_beams, beams):
        raise Failure(f"{what} splits the flat index by K; candidate (k, v) sits at flat index k·V + v, so the "
                      "hypothesis is index // V and the token index % V.")


def _test_beam_step_scores(t: Trial, beam_step) -> None:
    """Ranking mistakes show in the scores; check them first, then everything."""
    B, K, V, beam_size = 2, 3, 5, 3
    scores = torch.tensor([[-0.1, -2.0, -4.0], [-3.0, -0.5, -1.0]])  # (B, K): the hypotheses differ a lot
    log_probs = torch.log_softmax(t.randn(B, K, V), dim=-1)  # (B, K, V)
    what = f"beam_step(scores (B, K) = {(B, K)}, log_probs (B, K, V) = {(B, K, V)}, beam_size={beam_size})"
    got = t.call(beam_step, scores, log_probs, beam_size, what="beam_step")
    if isinstance(got, (tuple, list)) and len(got) == 3 and comparable(got[0], scores[:, :beam_size]):
        new, _, _ = _reference_step(scores, log_probs, beam_size)
        mistakes = (
            (log_probs.flatten(1).topk(beam_size, dim=1).values, "ignores the hypotheses' running scores: a candidate "
             "scores scores[k] + log_probs[k, v]"),
            ((scores + log_probs.max(dim=2).values).topk(beam_size, dim=1).values, "lets each hypothesis offer only "
             "its best token; all K·V candidates compete, so the winners may include two tokens of one hypothesis"),
        )
        for wrong, message in mistakes:
            if close(got[0], wrong) and not close(wrong, new):
                raise Failure(f"{what} {message}.")
        if close(got[0].sort(dim=1, descending=True).values, new) and not close(got[0], new):
            raise Failure(f"{what} finds the right candidates but not best first; sort them (topk does).")
    _test_beam_step(t, beam_step)


beam_step = Exercise(
    number="9.2",
    title="one step of beam search",
    test=_test_beam_step_scores,
    hints=[
        "Every hypothesis k can be extended by every token v, with score `scores[b, k] + log_probs[b, k, v]`: a "
        "(B, K, V) tensor of candidates. Broadcasting builds it in one line: `scores[:, :, None] + log_probs`.",
        "All K·V candidates of a sentence compete: flatten them to (B, K·V) and take `topk(beam_size, dim=1)`, which "
        "returns the best first. A flat index i came from hypothesis i // V and token i % V.",
        "best, index = candidates.flatten(1).topk(beam_size, dim=1)  # (B, beam_size): over all K·V candidates",
    ],
    success="the best extensions among all K·V candidates, best first, with their hypotheses and tokens.",
)


# ----- 9.3 landmarks of the warm-up schedule ----------------------------------------------------------
def _as_whole_number(value, what: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool):
        raise Failure(f"{what} is {value}; a whole number of steps was expected.")
    try:
        return operator.index(value)
    except TypeError:
        raise Failure(f"{what} is {value!r}, not a whole number of steps.") from None


def _test_warmup_landmarks(t: Trial, warmup_landmarks) -> None:
    from ..train.schedules import transformer_lr

    for d_model, warmup in ((512, 4000), (64, 100), (1024, 4000), (128, 250)):
        what = f"warmup_landmarks(d_model={d_model}, warmup_steps={warmup})"
        got = t.call(warmup_landmarks, d_model, warmup, what="warmup_landmarks")
        if got is None:
            raise Failure(f"{what} is None. Did your function forget to `return` (peak_step, peak_lr, half_step)?")
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise Failure(f"{what} is a {type(got).__name__}; expected three numbers: (peak_step, peak_lr, "
                          "half_step).")
        peak_step = _as_whole_number(got[0], f"the peak step of {what}")
        half_step = _as_whole_number(got[2], f"the half step of {what}")
        peak_lr = got[1]
        lr = lambda step: transformer_lr(step, d_model=d_model, warmup_steps=warmup)  # noqa: E731
        top = lr(warmup)
        if peak_step != warmup:
            raise Failure(f"the peak step of {what} is {peak_step}, but the rate there is {lr(max(1, peak_step)):.3g} "
                          f"and at step {warmup} it is {top:.3g}. The peak is where the rising line step·w^-1.5 "
                          "meets the falling curve step^-0.5.")
        if isinstance(peak_lr, (int, float)) and not isinstance(peak_lr, bool) and math.isfinite(peak_lr):
            for wrong, message in ((warmup**-0.5, "forgets the factor d_model^-0.5"),
                                   (d_model**-0.5, "forgets the factor min(...) = warmup^-0.5 at the peak"),
                                   ((d_model * warmup) ** -1.5, "raises d_model · warmup to -1.5; at the peak "
                                    "step · w^-1.5 = w · w^-1.5 = w^-0.5")):
                if math.isclose(peak_lr, wrong, rel_tol=1e-3) and not math.isclose(wrong, top, rel_tol=1e-3):
                    raise Failure(f"the peak rate of {what} is {peak_lr:.4g}: your formula {message}.")
        t.expect_number(peak_lr, top, f"the peak rate of {what}", atol=0, rtol=1e-6)
        if half_step <= warmup:
            raise Failure(f"the half step of {what} is {half_step}, before the peak; the question asks when the rate, "
                          "after its peak, has fallen to half of it.")
        for wrong, message in ((2 * warmup, "treats the decay as linear in the step; it falls like step^-0.5, so "
                                "halving the rate takes four times the step"),
                               (round(math.sqrt(2) * warmup), "takes √2 for the factor; solve "
                                "step^-0.5 = ½ · warmup^-0.5 for the step")):
            if half_step == wrong and wrong != 4 * warmup:
                raise Failure(f"the half step of {what} is {half_step}, where the rate is {lr(half_step) / top:.0%} "
                              f"of its peak: your answer {message}.")
        if not math.isclose(lr(half_step), top / 2, rel_tol=1e-9):
            raise Failure(f"the half step of {what} is {half_step}, where the rate is {lr(half_step) / top:.1%} of "
                          "its peak, not 50%.")


warmup_landmarks = Exercise(
    number="9.3",
    title="landmarks of the warm-up schedule",
    test=_test_warmup_landmarks,
    hints=[
        "The rate is d_model^-0.5 times the smaller of two curves: step · warmup^-1.5, a straight line up, and "
        "step^-0.5, a curve down. The line is smaller early on, the curve later; the peak is where they meet.",
        "Setting step · w^-1.5 = step^-0.5 gives step = w; the rate there is d_model^-0.5 · w^-0.5. After the peak "
        "the rate is d_model^-0.5 · step^-0.5: for what step is that half the peak?",
        "half_step = 4 * warmup_steps  # (4w)^-0.5 = ½ · w^-0.5",
    ],
    success="the peak at the end of the warm-up, and the long tail: a quarter of the rate takes sixteen times as long.",
)
