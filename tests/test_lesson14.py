"""Lesson 14: its derivations equal attnlib.distributed, and its exercise checkers judge fairly."""

import math
from fractions import Fraction

import pytest
import torch

import attnlib
from attnlib import distributed
from attnlib.exercises import lesson14
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

NOTEBOOK = "14_scaling_out.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


# ----- derivations ---------------------------------------------------------------------------
def test_derivation_cells_define_the_lessons_functions(derived):
    for name in ("shard", "average_gradients", "bytes_per_rank"):
        assert callable(derived.get(name)), name


@pytest.mark.parametrize("rows, world", [(8, 2), (12, 3), (5, 1), (16, 8)])
def test_shard_equals_attnlib(derived, rows, world):
    batch = torch.randn(rows, 4, 3)
    for rank in range(world):
        torch.testing.assert_close(derived["shard"](batch, rank, world), distributed.shard_batch(batch, rank, world))


class SimulatedRanks:
    """Stands in for torch.distributed on rank 0 of a group whose other ranks hold ``others``' gradients.

    ``all_reduce`` (SUM) adds the other ranks' tensors, one parameter after another, in the order
    the function under test reduces them: exactly what a real group computes for rank 0.
    """

    ReduceOp = torch.distributed.ReduceOp

    def __init__(self, others):
        self.others, self.calls = others, 0

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def get_world_size(self):
        return 1 + len(self.others)

    def all_reduce(self, tensor, op=torch.distributed.ReduceOp.SUM, **_):
        assert op == torch.distributed.ReduceOp.SUM
        for grads in self.others:
            tensor += grads[self.calls]
        self.calls += 1


def _model_with_gradients(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return model


@pytest.mark.parametrize("world", [2, 3])
def test_average_gradients_equals_attnlib_and_the_mean_over_ranks(derived, world, monkeypatch):
    ranks = [_model_with_gradients(seed) for seed in range(world)]  # rank r's gradients
    others = [[p.grad.clone() for p in m.parameters()] for m in ranks[1:]]
    expected = [torch.stack(g).mean(0) for g in zip(*[[p.grad.clone() for p in m.parameters()] for m in ranks])]

    ours = _model_with_gradients(0)
    derived["dist"] = SimulatedRanks(others)  # the notebook's `dist`, on rank 0 of `world` ranks
    derived["average_gradients"](ours)
    theirs = _model_with_gradients(0)
    monkeypatch.setattr(distributed, "dist", SimulatedRanks(others))
    distributed.average_gradients(theirs)
    for a, b, e in zip(ours.parameters(), theirs.parameters(), expected):
        torch.testing.assert_close(a.grad, b.grad)
        torch.testing.assert_close(a.grad, e)


def test_bytes_per_rank_equals_attnlib_training_memory(derived):
    for n in (1, 63_000_000, 1_557_611_200):
        for world in (1, 2, 8, 64):
            for sharding in distributed.SHARDING:
                for precision in distributed.PRECISIONS:
                    got = derived["bytes_per_rank"](n, world, sharding, precision)
                    expected = distributed.training_memory(n, world, sharding=sharding, precision=precision)
                    assert got == pytest.approx(expected["total"], rel=1e-12)


# ----- 14.1 gradients of ranks with different numbers of tokens ------------------------------
def _weighted(grads, tokens):
    return {k: sum(n * g[k] for n, g in zip(tokens, grads)) / sum(tokens) for k in grads[0]}


def test_14_1_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson14.combine_gradients, solutions["combine_gradients"], capsys)
    assert_check_passes(lesson14.combine_gradients, _weighted, capsys)

    def stacked(grads, tokens):
        weights = torch.tensor(tokens, dtype=torch.float32) / sum(tokens)  # (W,)
        return {k: torch.einsum("w,w...->...", weights, torch.stack([g[k] for g in grads])) for k in grads[0]}

    assert_check_passes(lesson14.combine_gradients, stacked, capsys)


def _mean(grads, tokens):
    return {k: sum(g[k] for g in grads) / len(grads) for k in grads[0]}


@pytest.mark.parametrize("wrong, fragments", [
    (lambda g, n: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda g, n: None, ["is None"]),
    (lambda g, n: [_weighted(g, n)], ["a list", "dict"]),
    (lambda g, n: {"weight": _weighted(g, n)["0.weight"]}, ["has the keys", "parameters' names"]),
    (_mean, ["plain average", "DDP's all-reduce", "by its number of tokens"]),
    (lambda g, n: _weighted(g, [1 / t for t in n]), ["1 / tokens"]),
    (lambda g, n: {k: sum(x[k] for x in g) for k in g[0]}, ["the sum of the ranks' gradients", "total number"]),
    (lambda g, n: {k: sum(t * x[k] for t, x in zip(n, g)) for k in g[0]}, ["without dividing by the total"]),
    (lambda g, n: {k: sum(t * x[k] for t, x in zip(n, g)) / len(g) for k in g[0]}, ["by the number of ranks"]),
    (lambda g, n: g[0], ["rank 0's gradient alone"]),
    (lambda g, n: {k: 1.01 * v for k, v in _weighted(g, n).items()}, ["wrong values", "whole batch"]),
    (lambda g, n: {k: v.double() for k, v in _weighted(g, n).items()}, ["dtype torch.float64"]),
])
def test_14_1_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson14.combine_gradients, wrong, capsys, *fragments)


def test_14_1_an_in_place_edit_of_the_inputs_cannot_pass():
    def scales_in_place(grads, tokens):
        for g, n in zip(grads, tokens):
            for v in g.values():
                v.mul_(n / sum(tokens))
        return {k: sum(g[k] for g in grads) for k in grads[0]}  # correct, and it spoils its inputs

    lesson14.combine_gradients.check(scales_in_place)  # passes: the checker kept its own copy


# ----- 14.2 per-rank batch and accumulation ----------------------------------------------------
def test_14_2_solution_and_an_equivalent_answer_pass(solutions, capsys):
    assert_check_passes(lesson14.plan_batches, solutions["plan_batches"], capsys)

    def largest_divisor(global_batch, world_size, max_per_rank):
        if global_batch % world_size:
            raise ValueError("uneven")
        share = global_batch // world_size
        per_rank = max(d for d in range(1, min(share, max_per_rank) + 1) if share % d == 0)
        return [float(per_rank), share // per_rank]  # a list, and a float that is whole: fine

    assert_check_passes(lesson14.plan_batches, largest_divisor, capsys)


def _right(G, W, m):
    return lesson14._plan(G, W, m)


@pytest.mark.parametrize("wrong, fragments", [
    (lambda G, W, m: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda G, W, m: None, ["a pair (per_rank_batch, accumulation_steps)"]),
    (lambda G, W, m: _right(G * W, W, m) if G % W == 0 else _right(G, W, m), ["forgets that"]),  # per_rank·steps = G
    (lambda G, W, m: (min(m, G // W), math.ceil(G / W / m)), ["gives a global batch of"]),
    (lambda G, W, m: (G // W, 1), ["do not fit on a rank"]),
    (lambda G, W, m: (1, G // W), ["more accumulation steps than needed"]),
    (lambda G, W, m: (0, 1), ["at least 1"]),
    (lambda G, W, m: (2.5, 3), ["a float", "whole number"]),
    (lambda G, W, m: _right(G - G % W, W, m), ["should raise a ValueError", "cannot be split evenly"]),
    (lambda G, W, m: _right(G, W, m) if G % W == 0 else (_ for _ in ()).throw(ZeroDivisionError("no")),
     ["raised ZeroDivisionError", "a ValueError was expected"]),
])
def test_14_2_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson14.plan_batches, wrong, capsys, *fragments)


# ----- 14.3 the largest model that fits --------------------------------------------------------
STAGES = ("none", "optimizer", "gradients", "parameters")


def _largest(memory, W, sharding, split=(2, 2, 12), shard_from=(3, 2, 1)):
    stage = STAGES.index(sharding)
    per = sum(Fraction(b, W if stage >= s else 1) for b, s in zip(split, shard_from))
    return math.floor(memory / per)


def test_14_3_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson14.largest_model, solutions["largest_model"], capsys)

    def with_floats(gpu_bytes, world_size, sharding):
        stage = STAGES.index(sharding)
        per = 2 / (world_size if stage >= 3 else 1) + 2 / (world_size if stage >= 2 else 1) \
            + 12 / (world_size if stage >= 1 else 1)
        return math.floor(gpu_bytes / per)

    def by_bisection(gpu_bytes, world_size, sharding):  # calls the lesson's bytes_per_rank (a stand-in in the check)
        low, high = 0, 64 * gpu_bytes
        while low < high:
            middle = (low + high + 1) // 2
            if bytes_per_rank(middle, world_size, sharding, "mixed") <= gpu_bytes:  # noqa: F821
                low = middle
            else:
                high = middle - 1
        return low

    assert_check_passes(lesson14.largest_model, with_floats, capsys)
    lesson14.largest_model.check(by_bisection)
    assert "Checked with correct versions of bytes_per_rank" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, fragments", [
    (lambda M, W, s: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
    (lambda M, W, s: None, ["is None", "forget to `return`"]),
    (lambda M, W, s: _largest(M, W, s, split=(4, 4, 8)), ["fp32's split"]),
    (lambda M, W, s: M * W // 16, ["shards weights, gradients and optimizer state whatever"]),
    (lambda M, W, s: M // 16, ["shards nothing"]),
    (lambda M, W, s: _largest(M, W, "gradients" if s == "optimizer" else s), ["one kind of memory more"]),
    (lambda M, W, s: _largest(M, W, "optimizer" if s == "gradients" else s), ["one kind of memory less"]),
    (lambda M, W, s: _largest(M, W, "none" if s == "optimizer" else s), ["shards nothing"]),
    (lambda M, W, s: _largest(M, W, s) + 1, ["one parameter too many"]),
    (lambda M, W, s: M, ["bytes, not parameters"]),
    (lambda M, W, s: _largest(M, W, s) - 5, ["off by -5"]),
    (lambda M, W, s: _largest(M, W, s) + 0.5, ["a float", "whole number"]),
])
def test_14_3_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson14.largest_model, wrong, capsys, *fragments)


# ----- hints and speed -------------------------------------------------------------------------
EXERCISES = (lesson14.combine_gradients, lesson14.plan_batches, lesson14.largest_model)
NAMES = {"14.1": "combine_gradients", "14.2": "plan_batches", "14.3": "largest_model"}
SIGNATURES = {"14.1": "def f(rank_gradients, rank_tokens):", "14.2": "def f(global_batch, world_size, max_per_rank):",
              "14.3": "def f(gpu_bytes, world_size, sharding):"}


@pytest.mark.parametrize("exercise", EXERCISES)
def test_hints_come_in_order_and_the_last_repeats(exercise, capsys):
    assert_hints_build_up(exercise, capsys)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_the_last_hint_shows_a_key_line_not_the_whole_solution(exercise, capsys):
    assert not gives_whole_solution(exercise.hints[-1], NOTEBOOK, NAMES[exercise.number])
    assert_last_hint_alone_fails(exercise, SIGNATURES[exercise.number], capsys, Fraction=Fraction)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_checks_are_fast_and_leave_the_random_stream_alone(exercise, solutions, capsys):
    assert_check_is_quick_and_leaves_the_random_stream_alone(exercise, solutions[NAMES[exercise.number]], capsys)


def test_attnlib_exports_the_lessons_modules():
    assert attnlib.distributed is distributed
    from attnlib import ddp_train  # a script (python -m attnlib.ddp_train): imported on use, not with the package

    assert attnlib.launch.launch is not None and ddp_train.Config is not None
