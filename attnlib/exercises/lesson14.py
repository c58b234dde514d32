"""Exercises of lesson 14 (scaling out).

14.1 ``combine_gradients``: the gradient of the whole batch from the ranks' gradients when the ranks
     hold different numbers of tokens (padding): a token-weighted average, checked against the
     gradient of the whole batch computed in one piece.
14.2 ``plan_batches``: the per-rank batch and the number of accumulation steps that give a global
     batch on ``world_size`` ranks when at most ``max_per_rank`` sequences fit on one.
14.3 ``largest_model``: the most parameters whose weights, gradients and Adam state (mixed precision)
     fit in one GPU's memory, with each kind of sharding.

Each checker recognises the typical mistakes (DDP's plain average, a forgotten world size, a stage
of sharding off by one, ...) and names them.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from ._core import Exercise, Failure, Trial, close, whole_number

PAD = -100  # targets that are padding: no loss, no gradient (cross_entropy's ignore_index)


# ----- 14.1 gradients of ranks with different numbers of tokens ------------------------------
def _problem(t: Trial, real_per_rank: list[list[int]], vocab: int = 7, width: int = 5, length: int = 6):
    """A tiny language model, each rank's padded batch, its gradients and the whole batch's gradient."""
    with torch.random.fork_rng(devices=[]):  # the learner's random stream is left as it was
        torch.manual_seed(int(t.randint(0, 2**31 - 1, (1,)).item()))
        model = nn.Sequential(nn.Embedding(vocab, width), nn.Linear(width, vocab))
    inputs, targets = [], []
    for lengths in real_per_rank:  # one rank: a (b, T) batch, sequence i has lengths[i] real targets
        x = t.randint(0, vocab, (len(lengths), length))  # (b, T)
        y = t.randint(0, vocab, (len(lengths), length))  # (b, T)
        for i, real in enumerate(lengths):
            y[i, real:] = PAD  # the rest of the sequence is padding
        inputs.append(x)
        targets.append(y)

    def gradients(x, y):
        logits = model(x)  # (b, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=PAD)  # mean over real targets
        return dict(zip([n for n, _ in model.named_parameters()], torch.autograd.grad(loss, list(model.parameters()))))

    per_rank = [gradients(x, y) for x, y in zip(inputs, targets)]
    tokens = [int((y != PAD).sum()) for y in targets]
    whole = gradients(torch.cat(inputs), torch.cat(targets))  # one process, the whole batch
    return per_rank, tokens, whole


def _combine(per_rank, weights):
    total = sum(weights)
    return {name: sum(w * g[name] for w, g in zip(weights, per_rank)) / total for name in per_rank[0]}


def _matches(got, expected: dict) -> bool:
    return isinstance(got, dict) and set(got) == set(expected) and all(
        isinstance(got[k], torch.Tensor) and got[k].shape == v.shape and got[k].dtype == v.dtype
        and close(got[k], v) for k, v in expected.items())


def _test_combine_gradients(t: Trial, combine_gradients) -> None:
    cases = ([[6, 1], [2, 2], [6, 6]], [[3, 3], [3, 3]], [[1], [6, 6, 6]], [[5, 2, 4], [6, 1, 1], [2, 6, 3], [4, 4, 1]])
    for real_per_rank in cases:
        per_rank, tokens, whole = _problem(t, real_per_rank)
        what = f"combine_gradients(rank_gradients, rank_tokens={tokens})"
        got = t.call(combine_gradients, copy.deepcopy(per_rank), list(tokens), what="combine_gradients")
        if got is None:
            raise Failure(f"{what} is None. Did your function forget to `return` the dict of gradients?")
        if not isinstance(got, dict):
            raise Failure(f"{what} is a {type(got).__name__}; a dict {{name: gradient}} with the ranks' names "
                          f"({', '.join(whole)}) was expected.")
        if set(got) != set(whole):
            raise Failure(f"{what} has the keys {sorted(got)}; expected the parameters' names {sorted(whole)}.")
        if _matches(got, whole):
            continue
        world = len(tokens)
        mistakes = (
            ([1] * world, "is the plain average of the ranks' gradients: what DDP's all-reduce computes. It gives "
             "every rank the same weight, so each token of a rank with few tokens counts for more than a token of "
             "a rank with many. Weight each rank by its number of tokens"),
            ([1 / n for n in tokens], "weights the ranks by 1 / tokens; a rank's gradient is a mean over its "
             "tokens, so weigh it by how many tokens it averaged, not the inverse"),
        )
        for weights, message in mistakes:
            if len(set(tokens)) > 1 and _matches(got, _combine(per_rank, weights)):
                raise Failure(f"{what} {message}.")
        sums = {"the sum of the ranks' gradients, not divided by anything": [1] * world,
                "Σ tokens_r · gradient_r without dividing by the total number of tokens": list(tokens)}
        for description, weights in sums.items():
            wrong = {k: sum(w * g[k] for w, g in zip(weights, per_rank)) for k in whole}
            if _matches(got, wrong):
                raise Failure(f"{what} is {description}. Divide by the total number of tokens, Σ tokens_r.")
        divided = {k: sum(n * g[k] for n, g in zip(tokens, per_rank)) / world for k in whole}
        if _matches(got, divided):
            raise Failure(f"{what} divides Σ tokens_r · gradient_r by the number of ranks; divide by the total "
                          "number of tokens instead, so the weights sum to one.")
        if _matches(got, per_rank[0]):
            raise Failure(f"{what} is rank 0's gradient alone; combine every rank's.")
        for name in whole:
            t.expect_tensor(got[name], whole[name], f"{what}[{name!r}] (against the gradient of the whole batch "
                            "computed in one piece)", atol=1e-6, rtol=1e-4)


combine_gradients = Exercise(
    number="14.1",
    title="gradients of ranks with different numbers of tokens",
    test=_test_combine_gradients,
    hints=[
        "Write the whole batch's loss as a sum over tokens: L = (1/N) Σ over all N real tokens of ℓ_i, with "
        "N = Σ_r n_r. Rank r's loss is L_r = (1/n_r) Σ over its own n_r tokens, so Σ over its tokens of ℓ_i is "
        "n_r · L_r.",
        "So L = Σ_r (n_r / N) · L_r, and the same weights carry over to the gradients. DDP's average uses "
        "1 / W for every rank instead, which is right only when every n_r is the same.",
        "total = sum(rank_tokens)  # then each rank's gradient is weighted by rank_tokens[r] / total",
    ],
    success="the gradient of the whole batch, from the ranks' gradients: weighted by their tokens.",
)


# ----- 14.2 per-rank batch and accumulation --------------------------------------------------
def _plan(global_batch: int, world_size: int, max_per_rank: int) -> tuple[int, int]:
    per_world = global_batch // world_size  # sequences each rank must see per step
    steps = next(a for a in range(1, per_world + 1) if per_world % a == 0 and per_world // a <= max_per_rank)
    return per_world // steps, steps


def _test_plan_batches(t: Trial, plan_batches) -> None:
    cases = ((512, 8, 16), (96, 4, 10), (64, 8, 100), (60, 4, 4), (7, 1, 3), (1024, 16, 24), (48, 2, 24),
             (2048, 64, 6))
    for G, W, m in cases:
        what = f"plan_batches(global_batch={G}, world_size={W}, max_per_rank={m})"
        got = t.call(plan_batches, G, W, m, what="plan_batches")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Failure(f"{what} is {got!r}; a pair (per_rank_batch, accumulation_steps) was expected.")
        per_rank, steps = (whole_number(v, f"{what}[{i}]") for i, v in enumerate(got))
        expected = _plan(G, W, m)
        if (per_rank, steps) == expected:
            continue
        if per_rank < 1 or steps < 1:
            raise Failure(f"{what} is {(per_rank, steps)}; both numbers must be at least 1.")
        if per_rank * steps == G and W > 1:
            raise Failure(f"{what} is {(per_rank, steps)}: per_rank × steps = {G}, which forgets that {W} ranks "
                          f"each see per_rank sequences per micro-step: the global batch is per_rank × "
                          f"world_size × steps.")
        if per_rank * steps * W != G:
            raise Failure(f"{what} is {(per_rank, steps)}, which gives a global batch of per_rank × world_size × "
                          f"steps = {per_rank * steps * W}, not {G}.")
        if per_rank > m:
            raise Failure(f"{what} is {(per_rank, steps)}: {per_rank} sequences do not fit on a rank that holds at "
                          f"most {m}.")
        raise Failure(f"{what} is {(per_rank, steps)}: correct, but with more accumulation steps than needed; "
                      f"{expected[1]} step(s) of {expected[0]} also fit, and fewer, larger micro-batches are faster.")
    for G, W, m in ((100, 8, 16), (30, 4, 30)):
        what = f"plan_batches(global_batch={G}, world_size={W}, max_per_rank={m})"
        try:
            got = plan_batches(G, W, m)
        except ValueError:
            continue
        except NotImplementedError:
            raise Failure("not attempted yet. Replace the `raise NotImplementedError(...)` line in the solution cell "
                          "with your code, run that cell, then run this check again.") from None
        except Exception as error:
            raise Failure(f"{what} raised {type(error).__name__}: {error}; a ValueError was expected: {G} sequences "
                          f"cannot be split evenly between {W} ranks.") from None
        raise Failure(f"{what} returned {got!r}; it should raise a ValueError: {G} sequences cannot be split "
                      f"evenly between {W} ranks, so no plan gives exactly that global batch.")


plan_batches = Exercise(
    number="14.2",
    title="per-rank batch and accumulation",
    test=_test_plan_batches,
    hints=[
        "Every step, each of the world_size ranks must see global_batch / world_size sequences. If that is not a "
        "whole number, no plan works: raise ValueError.",
        "A rank can see its share in `steps` micro-batches of share / steps sequences each; steps must divide the "
        "share, and share / steps must fit (≤ max_per_rank). Try steps = 1, 2, 3, ... and take the first that works.",
        "steps = next(a for a in range(1, share + 1) if share % a == 0 and share // a <= max_per_rank)",
    ],
    success="the same global batch, and so the same training run, on any number of ranks.",
)


# ----- 14.3 the largest model that fits --------------------------------------------------------
_STAGES = ("none", "optimizer", "gradients", "parameters")


def _per_parameter(world_size: int, sharding: str, split=(2, 2, 12)) -> Fraction:
    """Bytes per parameter on one rank: weights, gradients, optimizer state, each sharded from its stage on."""
    stage = _STAGES.index(sharding)
    return sum(Fraction(b, world_size if stage >= s else 1) for b, s in zip(split, (3, 2, 1)))


def _bytes_per_rank(num_parameters, world_size, sharding, precision="mixed"):
    """A correct stand-in for the lesson's bytes_per_rank (total bytes on one rank)."""
    split = (2, 2, 12) if precision == "mixed" else (4, 4, 8)
    return float(num_parameters * _per_parameter(world_size, sharding, split))


def _test_largest_model(t: Trial, largest_model) -> None:
    GB = 10**9
    cases = ((80 * GB, 8, "none"), (80 * GB, 8, "optimizer"), (80 * GB, 8, "gradients"), (80 * GB, 8, "parameters"),
             (16 * 2**30, 1, "none"), (24 * GB, 4, "gradients"), (40 * GB, 64, "parameters"), (10**6 + 7, 3, "optimizer"))
    for memory, W, sharding in cases:
        what = f"largest_model(gpu_bytes={memory}, world_size={W}, sharding={sharding!r})"
        got = whole_number(t.call(largest_model, memory, W, sharding, what="largest_model"), what)
        expected = math.floor(memory / _per_parameter(W, sharding))
        if got == expected:
            continue
        per = {name: math.floor(memory / value) for name, value in (  # in this order, where two coincide
            ("all", Fraction(16, W)), ("nothing", Fraction(16)),
            ("one stage more", _per_parameter(W, _STAGES[min(_STAGES.index(sharding) + 1, 3)])),
            ("one stage less", _per_parameter(W, _STAGES[max(_STAGES.index(sharding) - 1, 0)])),
            ("fp32", _per_parameter(W, sharding, (4, 4, 8))))}
        if got == expected + 1 or got == math.ceil(memory / _per_parameter(W, sharding)) != expected:
            raise Failure(f"{what} is {got}: one parameter too many, it does not fit. Round down.")
        if got == memory:
            raise Failure(f"{what} is {got}, the memory itself: bytes, not parameters. Divide by the bytes each "
                          "parameter costs on one rank.")
        messages = {
            "fp32": "uses fp32's split (4 + 4 + 8 bytes); in mixed precision the weights and gradients are bf16 "
                    "(2 + 2) and the optimizer holds 12 bytes (fp32 master copy, m and v)",
            "all": "shards weights, gradients and optimizer state whatever the sharding",
            "nothing": "shards nothing: every rank holds all 16 bytes per parameter",
            "one stage more": f"shards one kind of memory more than {sharding!r} does (optimizer state, then "
                              "gradients, then weights)",
            "one stage less": f"shards one kind of memory less than {sharding!r} does (optimizer state, then "
                              "gradients, then weights)",
        }
        for name, value in per.items():
            if got == value and value != expected:
                raise Failure(f"{what} is {got}: your count {messages[name]}.")
        raise Failure(f"{what} is {got}, off by {got - expected:+d} from the largest number of parameters that fits. "
                      "Per parameter and rank: 2 / W or 2 bytes of weights, 2 / W or 2 of gradients, 12 / W or 12 of "
                      "optimizer state, depending on what is sharded.")


largest_model = Exercise(
    number="14.3",
    title="the largest model that fits",
    test=_test_largest_model,
    hints=[
        "Turn the question around: how many bytes does one parameter cost on one rank? Then the answer is the "
        "memory divided by that, rounded down.",
        "In mixed precision: 2 bytes of weights, 2 of gradients, 12 of optimizer state. 'optimizer' divides the 12 by "
        "world_size, 'gradients' also the 2 of gradients, 'parameters' all three; 'none' divides nothing.",
        "per_parameter = Fraction(2, shard(3)) + Fraction(2, shard(2)) + Fraction(12, shard(1))  # shard(s): W from stage s on, else 1",
    ],
    success="the largest model whose weights, gradients and Adam state fit; activations still come on top.",
    uses={"bytes_per_rank": _bytes_per_rank},
)
