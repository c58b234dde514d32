"""Lesson 10: its derivations equal attnlib (GPT forward, the ladder's top rung, top-p), and its checkers judge fairly."""

import pytest
import torch

import attnlib
from attnlib.exercises import lesson10
from tests.notebook_tools import (assert_check_fails, assert_check_passes, exercise_solutions, gives_whole_solution,
                                  load_derivations)

NOTEBOOK = "10_gpt.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


# ----- derivations ---------------------------------------------------------------------------
def test_derivation_cells_define_the_forward_pass_the_ladder_and_top_p(derived):
    for name in ("causal_self_attention", "gpt_forward", "Ladder", "top_p_filter"):
        assert callable(derived.get(name)), name
    assert "top_k_filter" not in derived  # the learner writes it (exercise 10.1)


@pytest.mark.parametrize("layers, heads, width", [(1, 1, 8), (2, 4, 16), (3, 2, 12)])
def test_gpt_forward_equals_attnlib_gpt(derived, layers, heads, width):
    torch.manual_seed(layers)
    gpt = attnlib.GPT(13, 10, layers, heads, width).eval()
    with torch.no_grad():  # non-zero biases and norms, so a forgotten one cannot pass
        for name, p in gpt.named_parameters():
            if "bias" in name or "norm" in name:
                p.normal_()
    idx = torch.randint(0, 13, (3, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(derived["gpt_forward"](gpt, idx), gpt(idx))
        torch.testing.assert_close(derived["gpt_forward"](gpt, idx[:, :4]), gpt(idx[:, :4]))


def test_the_ladders_top_rung_is_attnlib_gpt(derived):
    torch.manual_seed(0)
    gpt = attnlib.GPT(11, 12, 2, 4, 16).eval()
    rung = derived["Ladder"](11, 12, 16, heads=4, feed_forward=True, residual=True, layers=2).eval()
    rung.load_state_dict(gpt.state_dict())  # strict: the same names and shapes
    assert rung.lm_head.weight is rung.token_embedding.weight
    idx = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(rung(idx), gpt(idx))


@pytest.mark.parametrize("options", [dict(heads=0), dict(heads=1), dict(heads=4), dict(heads=4, feed_forward=True),
                                     dict(heads=4, feed_forward=True, layers=2)])
def test_every_rung_is_causal_and_the_bigram_sees_one_character(derived, options):
    torch.manual_seed(0)
    rung = derived["Ladder"](11, 12, 16, **options).eval()
    for p in rung.parameters():  # the bigram table starts at zero: give it something to show
        torch.nn.init.normal_(p) if p.dim() > 1 else None
    idx = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(2))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 11
    with torch.no_grad():
        before, after = rung(idx), rung(changed)
    assert before.shape == (2, 12, 11)
    torch.testing.assert_close(before[:, :7], after[:, :7])  # the future stays hidden
    if options["heads"] == 0:
        torch.testing.assert_close(before, rung.table.weight[idx])  # one row per current character


def test_bigram_table_starts_uniform(derived):
    rung = derived["Ladder"](11, 12, 16, heads=0)
    assert torch.equal(rung.table.weight, torch.zeros(11, 11))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.999, 1.0])
def test_derived_top_p_equals_attnlib_and_keeps_the_smallest_set(derived, p):
    logits = 3 * torch.randn(50, 20, generator=torch.Generator().manual_seed(3))
    ours = derived["top_p_filter"](logits, p)
    torch.testing.assert_close(ours, attnlib.sampling.top_p_filter(logits, p))
    probabilities = logits.double().softmax(-1)
    kept = torch.isfinite(ours)
    assert (probabilities * kept).sum(-1).min() >= p - 1e-6  # the kept mass reaches p
    smallest_kept = torch.where(kept, probabilities, torch.inf).amin(-1)  # the least likely kept token ...
    without_it = (probabilities * kept).sum(-1) - smallest_kept
    assert (without_it < p + 1e-9).all()  # ... was needed: without it the mass falls short of p
    assert kept.gather(-1, logits.argmax(-1, keepdim=True)).all()  # the most likely token is always kept
    torch.testing.assert_close(ours[kept], logits[kept])  # kept logits are unchanged


def test_derived_top_p_on_batched_and_three_dimensional_logits(derived):
    logits = torch.randn(2, 3, 9, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(derived["top_p_filter"](logits, 0.7), attnlib.sampling.top_p_filter(logits, 0.7))


# ----- 10.1 top-k ----------------------------------------------------------------------------
def _top_k_sort(logits, k):
    if k >= logits.shape[-1]:
        return logits.clone()
    values, order = logits.sort(dim=-1, descending=True)
    drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order[..., k:], True)
    return logits.masked_fill(drop, float("-inf"))


def test_10_1_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson10.top_k_filter, solutions["top_k_filter"], capsys)
    assert_check_passes(lesson10.top_k_filter, attnlib.sampling.top_k_filter, capsys)
    assert_check_passes(lesson10.top_k_filter, _top_k_sort, capsys)


def _clipped(fn):
    return lambda logits, k: fn(logits, min(k, logits.shape[-1]))


@pytest.mark.parametrize("wrong, fragments", [
    (lambda l, k: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda l, k: None, ["is None"]),
    (lambda l, k: l.topk(min(k, l.shape[-1]), dim=-1), ["what topk returns", "(..., V)"]),
    (lambda l, k: attnlib.sampling.top_k_filter(l, k) if k <= l.shape[-1] else l.topk(k), ["raised an exception",
                                                                                          "Tip: topk cannot pick"]),
    (_clipped(lambda l, k: l.masked_fill(l > l.topk(k, dim=-1, largest=False).values[..., -1:], float("-inf"))),
     ["keeps the k smallest"]),
    (_clipped(lambda l, k: l.masked_fill(l < l.topk(k, dim=-1).values[..., -1:], 0.0)), ["sets the dropped logits to 0"]),
    (_clipped(lambda l, k: torch.softmax(l.masked_fill(l < l.topk(k, dim=-1).values[..., -1:], float("-inf")), -1)),
     ["returned probabilities"]),
    (_clipped(lambda l, k: l >= l.topk(k, dim=-1).values[..., -1:]), ["boolean tensor"]),
    (_clipped(lambda l, k: l.masked_fill(l <= l.topk(k, dim=-1).values[..., -1:], float("-inf"))),
     ["keeps", "exactly k"]),
    (_clipped(lambda l, k: l * 2), ["keeps the wrong tokens"]),
    (lambda l, k: l.double() if k >= l.shape[-1] else attnlib.sampling.top_k_filter(l, k).double(), ["dtype torch.float64"]),
    (lambda l, k: attnlib.sampling.top_k_filter(l, k) * 2, ["wrong values"]),
    (lambda l, k: l.masked_fill(l < l.topk(min(k, l.shape[-1]), dim=0).values[-1:], float("-inf"))
     if l.dim() == 2 else attnlib.sampling.top_k_filter(l, k), ["each column"]),
])
def test_10_1_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson10.top_k_filter, wrong, capsys, *fragments)


# ----- 10.2 left-padded causal mask ----------------------------------------------------------
def test_10_2_solution_and_an_equivalent_answer_pass(solutions, capsys):
    assert_check_passes(lesson10.left_padded_causal_mask, solutions["left_padded_causal_mask"], capsys)

    def by_loops(lengths, T):
        mask = torch.zeros(len(lengths), 1, T, T, dtype=torch.bool)
        for b, n in enumerate(lengths.tolist()):
            for i in range(T):
                for j in range(T - n, i + 1):
                    mask[b, 0, i, j] = True
        return mask

    assert_check_passes(lesson10.left_padded_causal_mask, by_loops, capsys)
    assert_check_passes(lesson10.left_padded_causal_mask,
                        lambda n, T: (attnlib.causal_mask(T) & (torch.arange(T) >= T - n[:, None])[:, None, :])[:, None],
                        capsys)


def _pos(T):
    return torch.arange(T)


@pytest.mark.parametrize("wrong, fragments", [
    (lambda n, T: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda n, T: None, ["is None"]),
    (lambda n, T: ((_pos(T) >= T - n[:, None])[:, None, None, :] & (_pos(T)[None] <= _pos(T)[:, None])).int(),
     ["dtype torch.int32", "boolean"]),
    (lambda n, T: (_pos(T) >= T - n[:, None])[:, None, :] & (_pos(T)[None] <= _pos(T)[:, None]), ["heads axis"]),
    (lambda n, T: ~((_pos(T) >= T - n[:, None])[:, None, None, :] & (_pos(T)[None] <= _pos(T)[:, None])), ["inverted"]),
    (lambda n, T: (_pos(T) < n[:, None])[:, None, None, :] & (_pos(T)[None] <= _pos(T)[:, None]), ["on the right"]),
    (lambda n, T: (_pos(T) >= T - n[:, None])[:, None, None, :].expand(len(n), 1, T, T), ["see the future"]),
    (lambda n, T: (_pos(T)[None] <= _pos(T)[:, None]).expand(len(n), 1, T, T), ["forgets the padding"]),
    (lambda n, T: (_pos(T) >= T - n[:, None])[:, None, None, :] & (_pos(T)[None] < _pos(T)[:, None]), ["from itself"]),
    (lambda n, T: (_pos(T) >= T - n[:, None] + 1)[:, None, None, :] & (_pos(T)[None] <= _pos(T)[:, None]),
     ["wrong at", "expected True"]),
    (lambda n, T: torch.ones(len(n), 1, T, T, dtype=torch.bool)[..., :-1], ["has shape"]),
])
def test_10_2_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson10.left_padded_causal_mask, wrong, capsys, *fragments)


# ----- 10.3 parameter count ------------------------------------------------------------------
def test_10_3_solution_and_an_equivalent_answer_pass(solutions, capsys):
    assert_check_passes(lesson10.gpt_parameter_count, solutions["gpt_parameter_count"], capsys)
    assert_check_passes(lesson10.gpt_parameter_count,
                        lambda V, T, L, H, d: float((V + T) * d + L * (12 * d * d + 13 * d) + 2 * d), capsys)
    assert_check_passes(lesson10.gpt_parameter_count,
                        lambda V, T, L, H, d: torch.tensor((V + T) * d + L * (12 * d * d + 13 * d) + 2 * d), capsys)


def _count(V, T, L, d):
    return (V + T) * d + L * (12 * d * d + 13 * d) + 2 * d


@pytest.mark.parametrize("wrong, fragments", [
    (lambda V, T, L, H, d: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda V, T, L, H, d: None, ["is None"]),
    (lambda V, T, L, H, d: _count(V, T, L, d) + V * d, ["counts the output layer's matrix separately"]),
    (lambda V, T, L, H, d: _count(V, T, L, d) - T * d, ["forgets the position embedding"]),
    (lambda V, T, L, H, d: _count(V, T, L, d) - 2 * d, ["forgets the final layer norm"]),
    (lambda V, T, L, H, d: _count(V, T, L, d) - 4 * d * L, ["forgets the two layer norms"]),
    (lambda V, T, L, H, d: _count(V, T, L, d) - 2 * d * L - d, ["a scale *and* a shift"]),
    (lambda V, T, L, H, d: _count(V, T, L, d) - 9 * d * L, ["forgets the biases of the linear layers"]),
    (lambda V, T, L, H, d: _count(V, T, L, d) - L * (6 * d * d + 3 * d), ["hidden width of d_model"]),
    (lambda V, T, L, H, d: _count(V, T, L, d) - L * (2 * d * d + 2 * d), ["stacked Q, K, V projection"]),
    (lambda V, T, L, H, d: (V + T) * d + 2 * d + H * L * (12 * d * d + 13 * d), ["multiplies the blocks by the number"]),
    (lambda V, T, L, H, d: _count(V, T, L, d) + 1, ["off by +1"]),
    (lambda V, T, L, H, d: "many", ["a str"]),
])
def test_10_3_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson10.gpt_parameter_count, wrong, capsys, *fragments)


# ----- hints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("exercise, function", [(lesson10.top_k_filter, "top_k_filter"),
                                                (lesson10.left_padded_causal_mask, "left_padded_causal_mask"),
                                                (lesson10.gpt_parameter_count, "gpt_parameter_count")])
def test_hints_build_up_and_never_give_the_whole_solution(exercise, function, capsys):
    assert 2 <= len(exercise.hints) <= 4
    for hint in exercise.hints:
        assert not gives_whole_solution(hint, NOTEBOOK, function)
