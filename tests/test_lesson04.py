"""Lesson 04: its derivations agree with attnlib, and its exercise checkers judge fairly."""

import numpy as np
import pytest
import torch

import attnlib
from attnlib import data
from attnlib.exercises import lesson04
from attnlib.exercises._core import wrap
from attnlib.seq2seq import DotProductAttention, EncoderMemory
from tests.notebook_tools import assert_check_fails, load_derivations

NOTEBOOK = "04_seq2seq_bottleneck.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


# ----- derivations -------------------------------------------------------------------------
def test_final_state_by_gathering_equals_the_packed_summary(derived):
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
        query, keys, mask, module.query_proj.weight, module.key_proj.weight, module.score.weight[0]
    )
    theirs = module(query, keys, mask)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    assert torch.all(ours[1][3] == 0) and torch.all(ours[0][3] == 0)  # zeros, not NaN


def test_dot_attention_equals_attnlib_after_copying_weights(derived):
    torch.manual_seed(0)
    module = DotProductAttention(5, 7, 4)
    query, keys = torch.randn(3, 5), torch.randn(3, 6, 7)  # (B, Dq), (B, S, Dk)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 2, 0])[:, None]  # (B, S)
    ours = derived["dot_attention"](query, keys, mask, module.query_proj.weight, module.key_proj.weight)
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
    hidden = torch.tanh((queries @ W_q.T)[:, :, None, :] + (keys @ W_k.T)[:, None, :, :])  # (B, T, S, A)
    return hidden @ v  # (B, T, S)


def test_4_1_reference_passes(capsys):
    passes(lesson04.additive_scores, additive_scores, capsys)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (not_attempted, ["not attempted yet"]),
        (lambda q, k, Wq, Wk, v: None, ["is None", "return"]),
        (lambda q, k, Wq, Wk, v: additive_scores(q, k, Wq, Wk, v).numpy(), ["numpy array"]),
        (lambda q, k, Wq, Wk, v: ((q @ Wq.T)[:, :, None, :] + (k @ Wk.T)[:, None, :, :]) @ v, ["tanh is missing"]),
        (lambda q, k, Wq, Wk, v: torch.tanh((q @ Wq.T)[:, :, None, :] + (k @ Wk.T)[:, None, :, :]),
         ["(2, 3, 5, 6)", "dot product with v, is missing"]),
        (lambda q, k, Wq, Wk, v: (torch.tanh((q @ Wq.T)[:, :, None, :] + (k @ Wk.T)[:, None, :, :]) @ v[:, None]),
         ["(2, 3, 5, 1)", "Squeeze"]),
        (lambda q, k, Wq, Wk, v: torch.tanh((q @ Wq.T)[:, None, :, :] + (k @ Wk.T)[:, :, None, :]) @ v,
         ["(2, 5, 3)", "keys before queries"]),
        (lambda q, k, Wq, Wk, v: torch.softmax(additive_scores(q, k, Wq, Wk, v), dim=-1), ["softmax weights"]),
        (lambda q, k, Wq, Wk, v: torch.tanh((q @ Wq)[:, :, None, :] + (k @ Wk.T)[:, None, :, :]) @ v,
         ["raised an exception", "RuntimeError"]),
        (lambda q, k, Wq, Wk, v: additive_scores(q, k, Wq, Wk, v) * 1.1, ["wrong values", "max absolute error"]),
        (lambda q, k, Wq, Wk, v: additive_scores(q, k, Wq, Wk, v).double(), ["dtype torch.float64"]),
        (lambda q, k, Wq, Wk, v: additive_scores(q, k, Wq, Wk, v) / 0.0, ["contains"]),
    ],
)
def test_4_1_typical_mistakes_are_explained(wrong, fragments, capsys):
    fails(lesson04.additive_scores, wrong, capsys, *fragments)


# ----- 4.2 attend ----------------------------------------------------------------------------
def attend(scores, keys, mask):
    weights = torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), dim=-1).nan_to_num(0.0)
    return weights @ keys, weights


def attend_with_own_softmax(scores, keys, mask):
    """A correct answer written differently: explicit max subtraction, exp and division."""
    allowed = mask[:, None, :].expand_as(scores)  # (B, T, S)
    shifted = scores - scores.masked_fill(~allowed, -1e30).amax(dim=-1, keepdim=True)  # (B, T, S)
    e = torch.exp(shifted.masked_fill(~allowed, -1e30)) * allowed  # (B, T, S)
    weights = e / e.sum(dim=-1, keepdim=True).clamp_min(1e-30)  # (B, T, S)
    return torch.einsum("bts,bsd->btd", weights, keys), weights


def test_4_2_reference_and_an_equivalent_answer_pass(capsys):
    passes(lesson04.attend, attend, capsys)
    passes(lesson04.attend, attend_with_own_softmax, capsys)


def without_nan_guard(scores, keys, mask):
    weights = torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), dim=-1)
    return weights @ keys, weights


def naive_exp(scores, keys, mask):
    e = torch.exp(scores) * mask[:, None, :]  # overflows for large scores
    weights = e / e.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return weights @ keys, weights


def softmax_over_queries(scores, keys, mask):
    weights = torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), dim=1).nan_to_num(0.0)
    return weights @ keys, weights


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (not_attempted, ["not attempted yet"]),
        (lambda s, k, m: None, ["returned None", "return context, weights"]),
        (lambda s, k, m: attend(s, k, m)[0], ["returned a Tensor", "pair"]),
        (lambda s, k, m: attend(s, k, m)[::-1], ["returned (weights, context)"]),
        (lambda s, k, m: (torch.softmax(s, -1) @ k, torch.softmax(s, -1)), ["padding got weight", "-inf"]),
        (lambda s, k, m: attend(s, k, ~m), ["mask is inverted", "True means 'may attend'"]),
        (softmax_over_queries, ["sum to one", "dim=-1"]),
        (lambda s, k, m: attend(s.masked_fill(~m, float("-inf")), k, m), ["raised an exception"]),
        (lambda s, k, m: (attend(s, k, m)[0] * 2, attend(s, k, m)[1]), ["the context", "wrong values"]),
        (without_nan_guard, ["all False", "NaN", "nan_to_num"]),
        (naive_exp, ["~1000", "overflows"]),
    ],
)
def test_4_2_typical_mistakes_are_explained(wrong, fragments, capsys):
    fails(lesson04.attend, wrong, capsys, *fragments)


# ----- 4.3 decoder step --------------------------------------------------------------------
def decoder_step(model, token, state, keys, mask):
    context, weights = model.scorer(state, keys, mask)  # (B, H), (B, S)
    embedded = model.target_embedding(token)  # (B, E)
    new_state = model.decoder(torch.cat([embedded, context], dim=-1), state)  # (B, H)
    logits = model.output(torch.cat([new_state, context], dim=-1))  # (B, V)
    return logits, new_state, weights


def test_4_3_reference_passes_and_equals_attnlibs_step(capsys):
    passes(lesson04.decoder_step, decoder_step, capsys)
    torch.manual_seed(0)
    model = attnlib.Seq2Seq(11, embed_dim=6, hidden_dim=8, attention="additive")
    token, state, keys = torch.randint(3, 11, (4,)), torch.randn(4, 8), torch.randn(4, 5, 8)
    mask = torch.arange(5)[None, :] < torch.tensor([5, 4, 2, 1])[:, None]  # (B, S)
    memory = EncoderMemory(keys, mask, state, model.scorer.project_keys(keys))
    with torch.no_grad():
        for a, b in zip(decoder_step(model, token, state, keys, mask), model.step(token, state, memory)):
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


def test_4_3_does_not_disturb_the_learners_random_numbers():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    lesson04.decoder_step.check(decoder_step)
    torch.testing.assert_close(torch.rand(3), expected)


# ----- hints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("exercise", [lesson04.additive_scores, lesson04.attend, lesson04.decoder_step])
def test_hints_come_in_order_and_the_last_repeats(exercise, capsys):
    exercise._hints_given = 0
    assert 2 <= len(exercise.hints) <= 4
    for number in range(1, len(exercise.hints) + 2):
        exercise.hint()
        out = capsys.readouterr().out
        shown = min(number, len(exercise.hints))
        assert f"Hint {shown}/{len(exercise.hints)}" in out
        assert wrap(exercise.hints[shown - 1]) in out
    exercise._hints_given = 0


def test_the_last_hints_are_working_solutions():
    """The final hint of each exercise, run as code, passes the checker."""
    namespace = {"torch": torch, "np": np, "attnlib": attnlib}
    for exercise, signature in (
        (lesson04.additive_scores, "def f(queries, keys, W_q, W_k, v):"),
        (lesson04.attend, "def f(scores, keys, mask):"),
        (lesson04.decoder_step, "def f(model, token, state, keys, mask):"),
    ):
        body = "\n".join("    " + line for line in exercise.hints[-1].splitlines())
        exec(f"{signature}\n{body}", namespace)
        exercise.check(namespace["f"])
