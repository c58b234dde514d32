"""Lesson 13: its derivations equal attnlib.interpret, and its exercise checkers judge fairly."""

import math

import numpy as np
import pytest
import torch

import attnlib
from attnlib import data, interpret
from attnlib.exercises import lesson13
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

NOTEBOOK = "13_induction_heads.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


# ----- derivations ---------------------------------------------------------------------------
def test_derivation_cells_define_the_model_the_score_and_the_decomposition(derived):
    for name in ("AttentionOnly", "previous_token_score", "head_contributions"):
        assert callable(derived.get(name)), name
    assert "induction_score" not in derived  # the learner writes it (exercise 13.2)


@pytest.mark.parametrize("layers, heads", [(1, 2), (2, 2), (3, 4)])
def test_derived_model_equals_attnlib_attention_only_transformer(derived, layers, heads):
    torch.manual_seed(layers)
    ours = derived["AttentionOnly"](13, 10, 16, heads, layers).eval()
    with torch.no_grad():
        for layer in ours.layers:  # non-zero biases, so a forgotten one cannot pass
            layer.in_proj_bias.normal_()
            layer.out_proj.bias.normal_()
    theirs = interpret.AttentionOnlyTransformer(13, 10, 16, heads, layers, layer_norm=True).eval()
    theirs.load_state_dict(ours.state_dict())  # strict: the same parameters under the same names
    tokens = torch.randint(0, 13, (3, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), theirs(tokens))
        logits, weights = theirs(tokens, return_weights=True)
        torch.testing.assert_close(ours(tokens), logits)
    assert len(weights) == layers


def test_derived_previous_token_score_equals_attnlib(derived):
    torch.manual_seed(0)
    for shape in ((3, 2, 7, 7), (1, 4, 2, 2), (5, 1, 12, 12)):
        scores = torch.randn(*shape).masked_fill(torch.ones(shape[-1], shape[-1], dtype=torch.bool).triu(1), -1e9)
        weights = scores.softmax(-1)
        torch.testing.assert_close(derived["previous_token_score"](weights), interpret.previous_token_score(weights))


def test_derived_head_contributions_add_up_and_ablation_removes_one(derived):
    torch.manual_seed(0)
    layer = attnlib.MultiHeadAttention(12, 3).eval()
    with torch.no_grad():
        layer.in_proj_bias.normal_()
        layer.out_proj.bias.normal_()
    x = torch.randn(2, 6, 12)
    with torch.no_grad():
        parts = derived["head_contributions"](layer, x)  # (B, H, T, d_model)
        whole = layer(x, causal=True)
        assert parts.shape == (2, 3, 6, 12)
        torch.testing.assert_close(parts.sum(1) + layer.out_proj.bias, whole)
        for head in range(3):
            with interpret.ablate_heads(layer, [(0, head)]):
                torch.testing.assert_close(layer(x, causal=True), whole - parts[:, head])


# ----- 13.1 the loss of a perfect copier -------------------------------------------------------
def _copier(V, T, low, high, *, cue=True, over=None, log=math.log):
    over = T - 1 if over is None else over
    return sum((p if cue else p - 1) * log(V) / over for p in range(low, high + 1)) / (high - low + 1)


def test_13_1_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson13.copier_loss, solutions["copier_loss"], capsys)
    assert_check_passes(lesson13.copier_loss, lambda V, T, a, b: (a + b) / 2 * math.log(V) / (T - 1), capsys)
    assert_check_passes(lesson13.copier_loss,
                        lambda V, T, a, b: np.float32((a + b) / 2 * np.log(V) / (T - 1)), capsys)
    assert_check_passes(lesson13.copier_loss,
                        lambda V, T, a, b: torch.tensor((a + b) / 2 / (T - 1)) * torch.log(torch.tensor(V)), capsys)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda V, T, a, b: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda V, T, a, b: None, ["is None"]),
        (lambda V, T, a, b: _copier(V, T, a, b, cue=False), ["first repeated token", "never seen before"]),
        (lambda V, T, a, b: _copier(V, T, a, b, over=T), ["divides by length", "T - 1 predictions"]),
        (lambda V, T, a, b: _copier(V, T, a, b, cue=False, over=T), ["divides by length", "first repeated token"]),
        (lambda V, T, a, b: _copier(V, T, a, b, log=math.log2), ["log base 2", "nats"]),
        (lambda V, T, a, b: _copier(V, T, b, b), ["uses max_period for every sequence"]),
        (lambda V, T, a, b: _copier(V, T, a, a), ["uses min_period for every sequence"]),
        (lambda V, T, a, b: math.log(V) - _copier(V, T, a, b), ["share of predictable positions"]),
        (lambda V, T, a, b: 0.0, ["is zero"]),
        (lambda V, T, a, b: math.log(V), ["is log V"]),
        (lambda V, T, a, b: _copier(V, T, a, b) + 0.01, ["off by +0.01", "how many of its predictions"]),
        (lambda V, T, a, b: "1.4", ["a str", "number was expected"]),
        (lambda V, T, a, b: float("nan"), ["finite number"]),
        (lambda V, T, a, b: torch.ones(2), ["tensor of shape (2,)"]),
    ],
)
def test_13_1_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson13.copier_loss, wrong, capsys, *fragments)


# ----- 13.2 the induction score ---------------------------------------------------------------
def _targets_by_loop(tokens, *, rule="induction"):
    """A plain-Python target table, to build wrong (and right) answers independently of the checker."""
    B, T = tokens.shape
    targets = torch.zeros(B, T, T, dtype=torch.bool)
    x = tokens.tolist()
    for b in range(B):
        for t in range(T):
            for j in range(T):
                if rule == "induction":
                    targets[b, t, j] = 1 <= j < t and x[b][j - 1] == x[b][t]
                elif rule == "duplicate":
                    targets[b, t, j] = j < t and x[b][j] == x[b][t]
                elif rule == "wrap":
                    targets[b, t, j] = j < t and x[b][j - 1] == x[b][t]  # x[-1] at j = 0: wraps around
                elif rule == "self":
                    targets[b, t, j] = 1 <= j <= t and x[b][j - 1] == x[b][t]
    return targets


def _score(weights, targets, *, every_query=False, per_sequence=False):
    on = (weights * targets[:, None]).sum(-1)  # (B, H, T)
    has = targets.any(-1)  # (B, T)
    if every_query:
        return on.mean(dim=(0, 2))
    if per_sequence:
        rows = [(on[b][:, has[b]]).mean(-1) for b in range(len(has)) if has[b].any()]
        return torch.stack(rows).mean(0)
    return (on * has[:, None]).sum(dim=(0, 2)) / has.sum()


def _loop_induction_score(weights, tokens):
    return _score(weights, _targets_by_loop(tokens))


def test_13_2_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson13.induction_score, solutions["induction_score"], capsys)
    assert_check_passes(lesson13.induction_score, interpret.induction_score, capsys)
    assert_check_passes(lesson13.induction_score, _loop_induction_score, capsys)


def _transposed(weights, tokens):
    return _loop_induction_score(weights.transpose(-2, -1), tokens)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda w, x: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda w, x: None, ["is None"]),
        (lambda w, x: _score(w, _targets_by_loop(x, rule="duplicate")), ["duplicate-token score", "*after*"]),
        (lambda w, x: _score(w, _targets_by_loop(x, rule="wrap")), ["key 0", "wraps tokens[T - 1] around"]),
        (lambda w, x: _score(w, _targets_by_loop(x, rule="self")), ["counts the query itself", "j < t"]),
        (lambda w, x: _score(w, _targets_by_loop(x), every_query=True), ["averages over every query"]),
        (lambda w, x: _score(w, _targets_by_loop(x), per_sequence=True), ["averages each sequence's queries first"]),
        (_transposed, ["wrong way round", "query t (row)"]),
        (lambda w, x: (w * _targets_by_loop(x)[:, None]).sum(-1).sum(-1) / 12, ["one score per sequence and head"]),
        (lambda w, x: (w * _targets_by_loop(x)[:, None]).sum(-1), ["a score per query"]),
        (lambda w, x: _loop_induction_score(w, x).double(), ["dtype torch.float64"]),
        (lambda w, x: _loop_induction_score(w, x).numpy(), ["numpy array"]),
        (lambda w, x: _loop_induction_score(w, x) * 0.5, ["wrong values"]),
        (lambda w, x: torch.full((w.shape[1],), float("nan")), ["NaN"]),
        (lambda w, x: w.reshape(3), ["raised an exception"]),
    ],
)
def test_13_2_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson13.induction_score, wrong, capsys, *fragments)


# ----- 13.3 an induction head by hand -------------------------------------------------------------
def _projections(V, M, *, query_rows="token", key_rows="previous", scale=None, d_k=None):
    d_model, d_k = 2 * V + M, d_k or V
    rows = {"token": slice(0, V), "position": slice(V, V + M), "previous": slice(V + M, 2 * V + M)}
    W_Q, W_K = torch.zeros(d_model, d_k), torch.zeros(d_model, d_k)
    W_Q[rows[query_rows], :V] = (20 * math.sqrt(d_k) if scale is None else scale) * torch.eye(V)
    W_K[rows[key_rows], :V] = torch.eye(V)
    return W_Q, W_K


def _by_position(V, M):
    """A head that matches positions (each query its own position: no induction at all)."""
    W = torch.zeros(2 * V + M, M)
    W[V : V + M] = 20 * math.sqrt(M) * torch.eye(M)
    return W, W / (20 * math.sqrt(M))


def test_13_3_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson13.induction_projections, solutions["induction_projections"], capsys)
    assert_check_passes(lesson13.induction_projections, lambda V, M: _projections(V, M, d_k=2 * V), capsys)

    def scaled_key(V, M):  # the scale on W_K instead of W_Q, given as a list
        W_Q, W_K = _projections(V, M, scale=1.0)
        return [W_Q, 30 * math.sqrt(V) * W_K]

    assert_check_passes(lesson13.induction_projections, scaled_key, capsys)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda V, M: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda V, M: None, ["returned None"]),
        (lambda V, M: _projections(V, M)[0], ["expected a pair"]),
        (lambda V, M: (_projections(V, M, query_rows="previous", key_rows="token")), ["Swap them"]),
        (lambda V, M: (_projections(V, M, key_rows="token")), ["both read the current token"]),
        (lambda V, M: (_projections(V, M, scale=2.0)), ["too soft", "1/√d_k"]),
        (_by_position, ["only", "tokens[t] == tokens[j - 1]"]),
        (lambda V, M: (_projections(V, M)[0][:, :3], _projections(V, M)[1]), ["W_Q has shape", "same width d_k"]),
        (lambda V, M: (torch.zeros(V + M, V), torch.zeros(V + M, V)),
         ["2·vocab_size + max_len", "one row per feature"]),
        (lambda V, M: tuple(W.double() for W in _projections(V, M)), ["dtype torch.float64"]),
        (lambda V, M: (_projections(V, M, scale=float("inf"))), ["NaN or infinity"]),
        (lambda V, M: (_projections(V, M, scale=1e30)[0], 1e30 * _projections(V, M)[1]), ["NaN attention weights"]),
        (lambda V, M: (np.zeros((2 * V + M, V)), np.zeros((2 * V + M, V))), ["W_Q is a ndarray"]),
    ],
)
def test_13_3_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson13.induction_projections, wrong, capsys, *fragments)


# ----- hints and speed -------------------------------------------------------------------------
EXERCISES = (lesson13.copier_loss, lesson13.induction_score, lesson13.induction_projections)
NAMES = {"13.1": "copier_loss", "13.2": "induction_score", "13.3": "induction_projections"}
SIGNATURES = {"13.1": "def f(vocab_size, length, min_period, max_period):", "13.2": "def f(weights, tokens):",
              "13.3": "def f(vocab_size, max_len):"}


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


def test_the_repeated_tokens_of_the_checkers_match_the_lessons_data():
    """The checkers make their own repeated sequences; they have the same structure as data.repeated_tokens."""
    from attnlib.exercises._core import Trial
    from attnlib.exercises.lesson13 import _repeated

    tokens = _repeated(Trial(lesson13.induction_score), 50, 14, 10, 3, 5)
    for row in tokens.tolist():
        period = next(p for p in range(3, 6) if all(row[t] == row[t - p] for t in range(p, 14))
                      and len(set(row[:p])) == p)
        assert period in (3, 4, 5)
    reference = data.repeated_tokens(5, length=14, vocab_size=10, min_period=3, max_period=5)
    assert interpret.induction_targets(reference.tokens).any()
