"""Lesson 04: its derivations agree with attnlib, and its exercise checkers judge fairly."""

import numpy as np
import pytest
import torch

import attnlib
from attnlib import data
from attnlib.exercises import lesson04
from attnlib.seq2seq import DotProductAttention, EncoderMemory
from tests.notebook_tools import (
    assert_check_fails,
    assert_check_is_quick_and_leaves_the_random_stream_alone,
    assert_hints_build_up,
    assert_last_hint_alone_fails,
    exercise_solutions,
    gives_whole_solution,
    load_derivations,
)

NOTEBOOK = "04_seq2seq_bottleneck.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


# ----- derivations -------------------------------------------------------------------------
def test_final_state_by_gathering_equals_the_encoders_summary(derived):
    torch.manual_seed(0)
    net = attnlib.Seq2Seq(13, embed_dim=6, hidden_dim=10, attention="none")
    examples = [data.Example((3, 4, 5), (5, 4, 3)), data.Example((6,) * 7, (6,) * 7), data.Example((9,), (9,))]
    batch = data.collate(examples)
    padded_states, _ = net.encoder(net.source_embedding(batch.source))  # (B, S, H), read through the padding
    summary = net.encode(batch.source, batch.source_mask).summary  # (B, H)
    torch.testing.assert_close(derived["final_state"](padded_states, batch.source_mask), summary)
    assert not torch.allclose(padded_states[:, -1], summary)  # the last *position* would be wrong


@pytest.mark.parametrize("Dq, Dk, A", [(5, 7, 4), (8, 8, 8)])
def test_additive_attention_equals_attnlib_after_copying_weights(derived, Dq, Dk, A):
    torch.manual_seed(0)
    module = attnlib.AdditiveAttention(Dq, Dk, A)
    query, keys = torch.randn(4, Dq), torch.randn(4, 6, Dk)  # (B, Dq), (B, S, Dk)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 3, 1, 0])[:, None]  # (B, S); the last row sees nothing
    ours = derived["additive_attention"](
        query, keys, mask, module.query_proj.weight.T, module.key_proj.weight.T, module.score.weight[0]
    )  # W_q (Dq, A), W_k (Dk, A): lesson 03's x @ W convention
    theirs = module(query, keys, mask)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    assert torch.all(ours[1][3] == 0) and torch.all(ours[0][3] == 0)  # zeros, not NaN


def test_dot_attention_equals_attnlib_after_copying_weights(derived):
    torch.manual_seed(0)
    module = DotProductAttention(5, 7, 4)
    query, keys = torch.randn(3, 5), torch.randn(3, 6, 7)  # (B, Dq), (B, S, Dk)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 2, 0])[:, None]  # (B, S)
    ours = derived["dot_attention"](query, keys, mask, module.query_proj.weight.T, module.key_proj.weight.T)
    for a, b in zip(ours, module(query, keys, mask)):
        torch.testing.assert_close(a, b)


def test_derivation_cells_only_define_functions(derived):
    defined = {name for name, value in derived.items() if callable(value) and not name.startswith("_")}
    assert {"final_state", "additive_attention", "dot_attention"} <= defined


# ----- checkers: helpers -------------------------------------------------------------------
def passes(exercise, fn, capsys):
    exercise.check(fn)
    out = capsys.readouterr().out
    assert out.startswith("✓"), out


def fails(exercise, fn, capsys, *fragments):
    return assert_check_fails(exercise, fn, capsys, *fragments)


def not_attempted(*args):
    raise NotImplementedError("replace this line with your solution")


# ----- 4.1 additive scores -----------------------------------------------------------------
def additive_scores(queries, keys, W_q, W_k, v):
    hidden = torch.tanh((queries @ W_q)[:, :, None, :] + (keys @ W_k)[:, None, :, :])  # (B, T, S, A)
    return hidden @ v  # (B, T, S)


def test_4_1_solution_and_an_equivalent_answer_pass(solutions, capsys):
    passes(lesson04.additive_scores, solutions["additive_scores"], capsys)
    passes(lesson04.additive_scores, additive_scores, capsys)
    passes(lesson04.additive_scores,
           lambda q, k, Wq, Wk, v: torch.einsum("btsa,a->bts", torch.tanh(
               torch.einsum("btd,da->bta", q, Wq)[:, :, None] + torch.einsum("bsd,da->bsa", k, Wk)[:, None]), v),
           capsys)


def test_4_1_agrees_with_attnlib_additive_attention_query_by_query(solutions):
    torch.manual_seed(0)
    module = attnlib.AdditiveAttention(5, 7, 4)
    queries, keys = torch.randn(2, 3, 5), torch.randn(2, 6, 7)  # (B, T, Dq), (B, S, Dk)
    with torch.no_grad():
        ours = solutions["additive_scores"](queries, keys, module.query_proj.weight.T, module.key_proj.weight.T,
                                            module.score.weight[0])  # (B, T, S)
        for t in range(3):
            torch.testing.assert_close(ours[:, t], module.scores(queries[:, t], keys))


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (not_attempted, ["not attempted yet"]),
        (lambda q, k, Wq, Wk, v: None, ["is None", "return"]),
        (lambda q, k, Wq, Wk, v: additive_scores(q, k, Wq, Wk, v).numpy(), ["numpy array"]),
        (lambda q, k, Wq, Wk, v: ((q @ Wq)[:, :, None, :] + (k @ Wk)[:, None, :, :]) @ v, ["tanh is missing"]),
        (lambda q, k, Wq, Wk, v: torch.tanh((q @ Wq)[:, :, None, :] + (k @ Wk)[:, None, :, :]),
         ["(2, 3, 5, 6)", "dot product with v, is missing"]),
        (lambda q, k, Wq, Wk, v: (torch.tanh((q @ Wq)[:, :, None, :] + (k @ Wk)[:, None, :, :]) @ v[:, None]),
         ["(2, 3, 5, 1)", "Squeeze"]),
        (lambda q, k, Wq, Wk, v: torch.tanh((q @ Wq)[:, None, :, :] + (k @ Wk)[:, :, None, :]) @ v,
         ["(2, 5, 3)", "keys before queries"]),
        (lambda q, k, Wq, Wk, v: torch.softmax(additive_scores(q, k, Wq, Wk, v), dim=-1), ["softmax weights"]),
        (lambda q, k, Wq, Wk, v: torch.tanh((q @ Wq.T)[:, :, None, :] + (k @ Wk)[:, None, :, :]) @ v,
         ["raised an exception", "RuntimeError", "no transpose"]),
        (lambda q, k, Wq, Wk, v: additive_scores(q, k, Wq, Wk, v) * 1.1, ["wrong values", "max absolute error"]),
        (lambda q, k, Wq, Wk, v: additive_scores(q, k, Wq, Wk, v).double(), ["dtype torch.float64"]),
        (lambda q, k, Wq, Wk, v: additive_scores(q, k, Wq, Wk, v) / 0.0, ["contains"]),
    ],
)
def test_4_1_typical_mistakes_are_explained(wrong, fragments, capsys):
    fails(lesson04.additive_scores, wrong, capsys, *fragments)


# ----- 4.2 path lengths ----------------------------------------------------------------------
def path_lengths(n, task, attention):
    if attention:
        return [1] * n
    sources = range(1, n + 1) if task == "copy" else range(n, 0, -1)
    return [(n - j + 1) + t for t, j in zip(range(1, n + 1), sources)]


def test_4_2_solution_and_equivalent_answers_pass(solutions, capsys):
    passes(lesson04.path_lengths, solutions["path_lengths"], capsys)
    passes(lesson04.path_lengths, path_lengths, capsys)
    passes(lesson04.path_lengths,  # closed forms, as a tensor and as floats
           lambda n, task, a: torch.ones(n, dtype=torch.long) if a else
           (torch.full((n,), n + 1) if task == "copy" else 2 * torch.arange(1, n + 1)), capsys)
    passes(lesson04.path_lengths, lambda n, task, a: [float(x) for x in path_lengths(n, task, a)], capsys)


def _without(fn):
    """Right with attention, ``fn`` without."""
    return lambda n, task, a: [1] * n if a else fn(n, task)


def _sources(n, task):
    return list(range(1, n + 1)) if task == "copy" else list(range(n, 0, -1))


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (not_attempted, ["not attempted yet"]),
        (lambda n, task, a: None, ["is None"]),
        (lambda n, task, a: n + 1, ["single number", "one length per output step"]),
        (lambda n, task, a: path_lengths(n, task, a) + [0], ["holds 4 numbers; expected 3"]),
        (lambda n, task, a: [str(x) for x in path_lengths(n, task, a)], ["'4' (a str)"]),
        (lambda n, task, a: torch.tensor(path_lengths(n, task, a), dtype=torch.float32), ["dtype torch.float32"]),
        (_without(lambda n, task: [n - j + 1 for j in _sources(n, task)]), ["only the encoder's updates"]),
        (_without(lambda n, task: list(range(1, n + 1))), ["only the decoder's updates"]),
        (_without(lambda n, task: [n - j + t for t, j in zip(range(1, n + 1), _sources(n, task))]),
         ["one short", "four in all"]),
        (_without(lambda n, task: [n - j + t + 2 for t, j in zip(range(1, n + 1), _sources(n, task))]),
         ["one too many"]),
        (lambda n, task, a: path_lengths(n, "copy", a), ["count for copying", "n + 1 - t"]),
        (lambda n, task, a: path_lengths(n, task, False), ["the count without attention", "h_j"]),
        (lambda n, task, a: [2] * n if a else path_lengths(n, task, a), ["counts 2 updates"]),
        (lambda n, task, a: [0] * n if a else path_lengths(n, task, a), ["one step from every output"]),
        (_without(lambda n, task: [x + (t == 2) for t, x in enumerate(path_lengths(n, task, False), 1)]),
         ["for output 2", "expected 4"]),
    ],
)
def test_4_2_typical_mistakes_are_explained(wrong, fragments, capsys):
    fails(lesson04.path_lengths, wrong, capsys, *fragments)


# ----- 4.3 decoder step --------------------------------------------------------------------
def decoder_step(model, token, state, keys, mask):
    context, weights = model.scorer(state, keys, mask)  # (B, H), (B, S)
    embedded = model.target_embedding(token)  # (B, E)
    new_state = model.decoder(torch.cat([embedded, context], dim=-1), state)  # (B, H)
    logits = model.output(torch.cat([new_state, context], dim=-1))  # (B, V)
    return logits, new_state, weights


def test_4_3_solution_passes_and_equals_attnlibs_step(solutions, capsys):
    passes(lesson04.decoder_step, solutions["decoder_step"], capsys)
    passes(lesson04.decoder_step, decoder_step, capsys)
    torch.manual_seed(0)
    model = attnlib.Seq2Seq(11, embed_dim=6, hidden_dim=8, attention="additive")
    token, state, keys = torch.randint(3, 11, (4,)), torch.randn(4, 8), torch.randn(4, 5, 8)
    mask = torch.arange(5)[None, :] < torch.tensor([5, 4, 2, 1])[:, None]  # (B, S)
    score_bias = torch.zeros(4, 5).masked_fill(~mask, float("-inf"))  # (B, S)
    for memory in (EncoderMemory(keys, mask, state, model.scorer.project_keys(keys)),  # the checked path
                   EncoderMemory(keys, mask, state, model.scorer.project_keys(keys), score_bias)):  # the fast one
        with torch.no_grad():
            for a, b in zip(solutions["decoder_step"](model, token, state, keys, mask), model.step(token, state, memory)):
                torch.testing.assert_close(a, b)


def attend_after_update(model, token, state, keys, mask):
    embedded = model.target_embedding(token)
    context, _ = model.scorer(state, keys, mask)
    new_state = model.decoder(torch.cat([embedded, context], dim=-1), state)
    context, weights = model.scorer(new_state, keys, mask)
    logits = model.output(torch.cat([new_state, context], dim=-1))
    return logits, new_state, weights


def swapped_cell_input(model, token, state, keys, mask):
    context, weights = model.scorer(state, keys, mask)
    new_state = model.decoder(torch.cat([context, model.target_embedding(token)], dim=-1), state)
    return model.output(torch.cat([new_state, context], dim=-1)), new_state, weights


def swapped_output_input(model, token, state, keys, mask):
    logits, new_state, weights = decoder_step(model, token, state, keys, mask)
    context, _ = model.scorer(state, keys, mask)
    return model.output(torch.cat([context, new_state], dim=-1)), new_state, weights


def logits_from_old_state(model, token, state, keys, mask):
    _, new_state, weights = decoder_step(model, token, state, keys, mask)
    context, _ = model.scorer(state, keys, mask)
    return model.output(torch.cat([state, context], dim=-1)), new_state, weights


def old_state_returned(model, token, state, keys, mask):
    logits, _, weights = decoder_step(model, token, state, keys, mask)
    return logits, state, weights


def no_context_in_output(model, token, state, keys, mask):
    _, new_state, weights = decoder_step(model, token, state, keys, mask)
    return model.output(new_state), new_state, weights


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (not_attempted, ["not attempted yet"]),
        (lambda *a: None, ["returned None"]),
        (lambda *a: decoder_step(*a)[:2], ["tuple of length 2", "triple"]),
        (attend_after_update, ["*new* state", "previous"]),
        (swapped_cell_input, ["[context; embedded token]", "torch.cat([embedded, context], dim=-1)"]),
        (swapped_output_input, ["[context; new state]", "torch.cat([new_state, context], dim=-1)"]),
        (logits_from_old_state, ["logits come from the old state"]),
        (old_state_returned, ["new state equals the old one"]),
        (no_context_in_output, ["raised an exception", "RuntimeError"]),
        (lambda *a: (decoder_step(*a)[0], decoder_step(*a)[1], decoder_step(*a)[2][:, :-1]), ["shape (3, 4)"]),
    ],
)
def test_4_3_typical_mistakes_are_explained(wrong, fragments, capsys):
    fails(lesson04.decoder_step, wrong, capsys, *fragments)


# ----- 4.4 the reverse task's alignment ------------------------------------------------------
def reverse_alignment(source_mask):
    lengths = source_mask.sum(dim=1)  # (B,)
    S = source_mask.shape[1]
    out = torch.zeros(source_mask.shape[0], S + 1, S)
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):
            out[b, t, n - 1 - t] = 1.0
    return out


def test_4_4_solution_and_an_equivalent_answer_pass(solutions, capsys):
    passes(lesson04.reverse_alignment, solutions["reverse_alignment"], capsys)
    passes(lesson04.reverse_alignment, reverse_alignment, capsys)


def test_4_4_the_solution_is_the_alignment_of_a_model_that_reverses(solutions):
    """A greedy decoder that attends where 4.4 says, and copies what it reads, writes the reversed string."""
    batch = data.collate([data.Example((3, 4, 5), (5, 4, 3)), data.Example((6, 7), (7, 6))])
    weights = solutions["reverse_alignment"](batch.source_mask)  # (B, S + 1, S)
    read = (weights @ batch.source[:, :, None].float())[..., 0].long()  # (B, S + 1): the token each step reads
    assert read[0, :3].tolist() == [5, 4, 3] and read[1, :2].tolist() == [7, 6]
    assert torch.all(weights[0, 3:] == 0) and torch.all(weights[1, 2:] == 0)  # EOS and after: nothing


def _anti_diagonal_of_padding(source_mask):
    B, S = source_mask.shape
    lengths = source_mask.sum(dim=1)
    steps = torch.arange(S + 1)[None, :, None]
    wanted = torch.where(steps < lengths[:, None, None], S - 1 - steps, -1)
    return (torch.arange(S)[None, None, :] == wanted).float()


def _diagonal(source_mask):
    B, S = source_mask.shape
    steps = torch.arange(S + 1)[None, :, None]
    wanted = torch.where(steps < source_mask.sum(dim=1)[:, None, None], steps, -1)
    return (torch.arange(S)[None, None, :] == wanted).float()


def _eos_row_wraps(source_mask):
    out = reverse_alignment(source_mask)
    for b, n in enumerate(source_mask.sum(dim=1).tolist()):
        out[b, n, -1] = 1.0  # n - 1 - n = -1: the last column, counted from the end
    return out


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (not_attempted, ["not attempted yet"]),
        (lambda m: None, ["is None"]),
        (lambda m: reverse_alignment(m)[:, :-1], ["(4, 5, 5)", "S + 1"]),
        (lambda m: reverse_alignment(m).transpose(1, 2), ["rows and columns are swapped"]),
        (lambda m: reverse_alignment(m).bool(), ["dtype torch.bool", "float32"]),
        (_diagonal, ["copy task's alignment", "anti-diagonal"]),
        (_anti_diagonal_of_padding, ["*padded* row", "n_b - 1 - t"]),
        (_eos_row_wraps, ["not all zero", "EOS"]),
        (lambda m: 0.5 * reverse_alignment(m), ["one-hot"]),
        (lambda m: reverse_alignment(m).double(), ["dtype torch.float64"]),
    ],
)
def test_4_4_typical_mistakes_are_explained(wrong, fragments, capsys):
    fails(lesson04.reverse_alignment, wrong, capsys, *fragments)


# ----- every exercise: stubs, exceptions, hints, speed -------------------------------------
EXERCISES = [
    (lesson04.additive_scores, "additive_scores", "def f(queries, keys, W_q, W_k, v):"),
    (lesson04.path_lengths, "path_lengths", "def f(n, task, attention):"),
    (lesson04.decoder_step, "decoder_step", "def f(model, token, state, keys, mask):"),
    (lesson04.reverse_alignment, "reverse_alignment", "def f(source_mask):"),
]


@pytest.mark.parametrize("exercise, function, signature", EXERCISES)
def test_checkers_report_exceptions_and_unsolved_stubs(exercise, function, signature, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise {exercise.number} ({function}): replace this line with your solution")

    fails(exercise, stub, capsys, "not attempted")
    fails(exercise, lambda *args, **kwargs: [][1], capsys, "raised an exception", "IndexError")


@pytest.mark.parametrize("exercise, function, signature", EXERCISES)
def test_hints_build_up_and_the_last_shows_a_key_line_not_the_whole_solution(exercise, function, signature, capsys):
    assert_hints_build_up(exercise, capsys)
    assert not gives_whole_solution(exercise.hints[-1], NOTEBOOK, function)
    assert_last_hint_alone_fails(exercise, signature, capsys, np=np, attnlib=attnlib)  # the key line alone is not an answer


@pytest.mark.parametrize("exercise, function, signature", EXERCISES)
def test_checks_are_fast_and_leave_the_random_stream_alone(exercise, function, signature, solutions, capsys):
    assert_check_is_quick_and_leaves_the_random_stream_alone(exercise, solutions[function], capsys)
