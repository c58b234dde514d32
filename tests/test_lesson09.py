"""Lesson 09: its derivations equal attnlib, and its exercise checkers judge fairly."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import attnlib
from attnlib.data import BOS, PAD
from attnlib.exercises import lesson09
from tests.notebook_tools import (
    assert_check_fails,
    assert_check_is_quick_and_leaves_the_random_stream_alone,
    assert_check_passes,
    assert_hints_build_up,
    assert_last_hint_alone_fails,
    exercise_solutions,
    gives_whole_solution,
    load_derivations,
)

NOTEBOOK = "09_transformer.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


# ----- derivations ---------------------------------------------------------------------------
def test_derivation_cells_define_the_lessons_functions(derived):
    for name in ("source_padding_mask", "transformer_logits", "transformer_parameters", "smoothed_cross_entropy"):
        assert callable(derived.get(name)), name
    assert "target_mask" not in derived and "beam_step" not in derived  # the learner writes those


@pytest.mark.parametrize("pad_id", [PAD, 5])
def test_source_padding_mask_equals_attnlib(derived, pad_id):
    tokens = torch.tensor([[3, 4, 5, pad_id], [6, pad_id, pad_id, pad_id]])
    torch.testing.assert_close(derived["source_padding_mask"](tokens, pad_id), attnlib.padding_mask(tokens, pad_id))


@pytest.mark.parametrize("norm_first, encoder_layers, decoder_layers", [(False, 2, 2), (True, 1, 3), (False, 3, 1)])
def test_transformer_logits_equals_attnlib_transformer(derived, norm_first, encoder_layers, decoder_layers):
    torch.manual_seed(0)
    config = attnlib.TransformerConfig(vocab_size=17, d_model=16, num_heads=4, num_encoder_layers=encoder_layers,
                                       num_decoder_layers=decoder_layers, d_ff=24, norm_first=norm_first)
    model = attnlib.Transformer(config).eval()
    source = torch.randint(3, 17, (3, 6))
    source[0, 2:] = PAD
    target_input = torch.randint(3, 17, (3, 4))
    target_input[:, 0] = BOS
    target_input[1, 2:] = PAD
    with torch.no_grad():
        torch.testing.assert_close(derived["transformer_logits"](model, source, target_input),
                                   model(source, target_input))


@pytest.mark.parametrize("changes", [
    dict(vocab_size=37_000),
    dict(vocab_size=37_000, d_model=1024, num_heads=16, d_ff=4096),
    dict(vocab_size=144, d_model=64, num_heads=2, num_encoder_layers=2, num_decoder_layers=2, d_ff=128),
    dict(vocab_size=100, d_model=32, num_heads=4, num_encoder_layers=3, num_decoder_layers=1, d_ff=48,
         share_embeddings=False, target_vocab_size=70),
    dict(vocab_size=50, d_model=32, num_heads=4, num_encoder_layers=1, num_decoder_layers=2, d_ff=64,
         share_embeddings=False),
])
def test_transformer_parameters_equals_numel(derived, changes):
    config = attnlib.TransformerConfig(**changes)
    with torch.device("meta"):
        model = attnlib.Transformer(config)
    parts = derived["transformer_parameters"](config)
    assert sum(parts.values()) == sum(p.numel() for p in model.parameters())
    assert parts["encoder"] == sum(p.numel() for p in model.encoder.parameters())
    assert parts["decoder"] == sum(p.numel() for p in model.decoder.parameters())


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4])
def test_smoothed_cross_entropy_equals_attnlib_and_torch(derived, smoothing):
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(3, 5, 9, generator=g), torch.randint(1, 9, (3, 5), generator=g)
    targets[2, 1:] = PAD
    ours = derived["smoothed_cross_entropy"](logits, targets, smoothing)
    torch.testing.assert_close(ours, attnlib.train.label_smoothed_cross_entropy(logits, targets, smoothing=smoothing))
    torch.testing.assert_close(ours, F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                                     label_smoothing=smoothing, ignore_index=PAD))


# ----- 9.1 the target mask -------------------------------------------------------------------------
def _lower(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


def test_9_1_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson09.target_mask, solutions["target_mask"], capsys)
    assert_check_passes(lesson09.target_mask, attnlib.target_mask, capsys)
    positions = lambda tokens: torch.arange(tokens.shape[1], device=tokens.device)  # noqa: E731
    assert_check_passes(lesson09.target_mask, lambda tokens, pad_id: (
        (positions(tokens)[None, :] <= positions(tokens)[:, None]) & (tokens != pad_id)[:, None, :])[:, None],
        capsys)


@pytest.mark.parametrize("wrong, fragments", [
    (lambda tokens, pad_id: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda tokens, pad_id: None, ["is None"]),
    (lambda tokens, pad_id: tokens != pad_id, ["(3, 6)", "the padding alone"]),
    (lambda tokens, pad_id: (tokens != pad_id)[:, None, None, :], ["the padding alone", "causal"]),
    (lambda tokens, pad_id: _lower(tokens.shape[1]), ["causality alone"]),
    (lambda tokens, pad_id: (tokens != pad_id)[:, None, :] & _lower(tokens.shape[1]), ["add the head axis"]),
    (lambda tokens, pad_id: ~attnlib.target_mask(tokens, pad_id), ["wrong way round", "may attend"]),
    (lambda tokens, pad_id: (tokens != pad_id)[:, None, None, :] & _lower(tokens.shape[1]).T, ["the future", "tril"]),
    (lambda tokens, pad_id: (tokens != pad_id)[:, None, None, :] & _lower(tokens.shape[1]).tril(-1),
     ["hides the diagonal"]),
    (lambda tokens, pad_id: (tokens != pad_id)[:, None, :, None] & _lower(tokens.shape[1]),
     ["padded *queries*", "(B, 1, 1, T)", "NaN"]),
    (lambda tokens, pad_id: (tokens != pad_id)[:, None, :, None] & attnlib.target_mask(tokens, pad_id),
     ["padded *queries*"]),  # with padding at the end, hiding padded queries too is the same mistake
    (lambda tokens, pad_id: _lower(tokens.shape[1]).expand(tokens.shape[0], 1, -1, -1), ["ignores the padding"]),
    (lambda tokens, pad_id: (tokens != pad_id)[:, None, None, :].expand(-1, 1, tokens.shape[1], -1),
     ["ignores causality"]),
    (lambda tokens, pad_id: attnlib.target_mask(tokens, 0), ["as token 0", "pad_id"]),
    (lambda tokens, pad_id: attnlib.target_mask(tokens, pad_id).float(), ["dtype torch.float32", "boolean"]),
    (lambda tokens, pad_id: attnlib.target_mask(tokens, pad_id)[:, :, :, :-1], ["shape", "expected shape"]),
])
def test_9_1_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson09.target_mask, wrong, capsys, *fragments)


# ----- 9.2 one step of beam search -----------------------------------------------------------------
def _step(scores, log_probs, beam_size):
    V = log_probs.shape[2]
    best, index = (scores[:, :, None] + log_probs).flatten(1).topk(beam_size, dim=1)
    return best, index, V


def test_9_2_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson09.beam_step, solutions["beam_step"], capsys)
    assert_check_passes(lesson09.beam_step, attnlib.decoding.beam_step, capsys)

    def by_sorting(scores, log_probs, beam_size):
        B, K, V = log_probs.shape
        candidates = (scores.unsqueeze(-1) + log_probs).reshape(B, K * V)
        order = candidates.argsort(dim=1, descending=True)[:, :beam_size]
        return candidates.gather(1, order), torch.div(order, V, rounding_mode="floor"), order.remainder(V)

    assert_check_passes(lesson09.beam_step, by_sorting, capsys)


def _per_hypothesis(scores, log_probs, beam_size):
    best, tokens = (scores[:, :, None] + log_probs).topk(min(beam_size, log_probs.shape[2]), dim=2)
    return best, torch.zeros_like(tokens), tokens


def _best_token_each(scores, log_probs, beam_size):
    top, token = log_probs.max(dim=2)  # (B, K)
    best, beams = (scores + top).topk(min(beam_size, scores.shape[1]), dim=1)
    return best, beams, token.gather(1, beams)


def _no_running_scores(scores, log_probs, beam_size):
    best, index = log_probs.flatten(1).topk(beam_size, dim=1)
    V = log_probs.shape[2]
    return best, index // V, index % V


def _by_k(scores, log_probs, beam_size):
    best, index, V = _step(scores, log_probs, beam_size)
    K = scores.shape[1]
    return best, index // K, index % K


def _unsorted(scores, log_probs, beam_size):
    best, index, V = _step(scores, log_probs, beam_size)
    return best.flip(1), (index // V).flip(1), (index % V).flip(1)


def _swapped(scores, log_probs, beam_size):
    best, index, V = _step(scores, log_probs, beam_size)
    return best, index % V, index // V


def _float_indices(scores, log_probs, beam_size):
    best, index, V = _step(scores, log_probs, beam_size)
    return best, (index // V).float(), (index % V).float()


@pytest.mark.parametrize("wrong, fragments", [
    (lambda s, lp, k: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda s, lp, k: None, ["returned None"]),
    (lambda s, lp, k: _step(s, lp, k)[:2], ["expected three tensors"]),
    (_per_hypothesis, ["ranks each hypothesis's tokens separately", "flatten"]),
    (_best_token_each, ["only its best token"]),
    (_no_running_scores, ["ignores the hypotheses' running scores"]),
    (_by_k, ["splits the flat index by K", "index // V"]),
    (_unsorted, ["not best first"]),
    (_swapped, ["the other way round", "(new_scores, beams, tokens)"]),
    (_float_indices, ["integer indices"]),
])
def test_9_2_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson09.beam_step, wrong, capsys, *fragments)


# ----- 9.3 landmarks of the warm-up schedule ----------------------------------------------------------
def test_9_3_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson09.warmup_landmarks, solutions["warmup_landmarks"], capsys)
    assert_check_passes(lesson09.warmup_landmarks, lambda d, w: [float(w), 1 / math.sqrt(d * w), 4.0 * w], capsys)
    assert_check_passes(lesson09.warmup_landmarks,
                        lambda d, w: (np.int64(w), np.float64(d**-0.5 * w**-0.5), torch.tensor(4 * w)), capsys)


@pytest.mark.parametrize("wrong, fragments", [
    (lambda d, w: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda d, w: None, ["is None"]),
    (lambda d, w: (w, (d * w) ** -0.5), ["expected three numbers"]),
    (lambda d, w: (w + 1, (d * w) ** -0.5, 4 * w), ["peak step", "meets the falling curve"]),
    (lambda d, w: (w, w**-0.5, 4 * w), ["forgets the factor d_model^-0.5"]),
    (lambda d, w: (w, d**-0.5, 4 * w), ["forgets the factor min(...)"]),
    (lambda d, w: (w, (d * w) ** -1.5, 4 * w), ["raises d_model · warmup to -1.5"]),
    (lambda d, w: (w, (d * w) ** -0.5 * 1.01, 4 * w), ["peak rate", "off by"]),
    (lambda d, w: (w, (d * w) ** -0.5, 2 * w), ["treats the decay as linear", "71%"]),
    (lambda d, w: (w, (d * w) ** -0.5, round(math.sqrt(2) * w)), ["√2"]),
    (lambda d, w: (w, (d * w) ** -0.5, w // 2), ["before the peak"]),
    (lambda d, w: (w, (d * w) ** -0.5, 3 * w), ["not 50%"]),
    (lambda d, w: (w, (d * w) ** -0.5, 4 * w + 0.5), ["not a whole number", "half step"]),
    (lambda d, w: ("4000", (d * w) ** -0.5, 4 * w), ["not a whole number"]),
])
def test_9_3_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson09.warmup_landmarks, wrong, capsys, *fragments)


# ----- hints and speed -------------------------------------------------------------------------------
EXERCISES = (lesson09.target_mask, lesson09.beam_step, lesson09.warmup_landmarks)
NAMES = {"9.1": "target_mask", "9.2": "beam_step", "9.3": "warmup_landmarks"}
SIGNATURES = {"9.1": "def f(tokens, pad_id):", "9.2": "def f(scores, log_probs, beam_size):",
              "9.3": "def f(d_model, warmup_steps):"}


@pytest.mark.parametrize("exercise", EXERCISES)
def test_hints_come_in_order_and_the_last_repeats(exercise, capsys):
    assert_hints_build_up(exercise, capsys)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_the_last_hint_shows_a_key_line_not_the_whole_solution(exercise, capsys):
    assert not gives_whole_solution(exercise.hints[-1], NOTEBOOK, NAMES[exercise.number])
    assert_last_hint_alone_fails(exercise, SIGNATURES[exercise.number], capsys)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_checks_are_fast_and_leave_the_random_stream_alone(exercise, solutions, capsys):
    assert_check_is_quick_and_leaves_the_random_stream_alone(exercise, solutions[NAMES[exercise.number]], capsys)
