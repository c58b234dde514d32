"""Exercises of lesson 03 (queries, keys and values).

Each checker first looks for this lesson's classic mistakes (a forgotten temperature,
softmax over the queries, the weights returned instead of the values, q and k split
in the wrong order, a percentage instead of a fraction, ...) and names them; only
then does it fall back to a plain comparison with the right answer.
"""

from __future__ import annotations

import math

import torch

from ._core import Exercise, Trial, close, comparable


# ----- small helpers (never raise on a learner's odd result) ----------------------------
def _lookup(queries, keys, values, scale):
    """softmax(queries keysᵀ · scale) values, the reference soft lookup."""
    scores = queries @ keys.transpose(-2, -1) * scale  # (..., Lq, Lk)
    return torch.softmax(scores, dim=-1) @ values  # (..., Lq, d_v)


# ----- Exercise 3.1: a soft dictionary lookup -------------------------------------------
def _test_soft_lookup(t: Trial, soft_lookup) -> None:
    queries = t.randn(3, 4)  # (Lq, d)
    keys = t.randn(5, 4)  # (Lk, d)
    values = t.randn(5, 2)  # (Lk, d_v)
    temperature = 0.25
    what = "soft_lookup(queries (3, 4), keys (5, 4), values (5, 2), temperature=0.25)"
    got = t.call(soft_lookup, queries, keys, values, temperature, what=what)
    expected = _lookup(queries, keys, values, 1 / temperature)  # (Lq, d_v)
    weights = torch.softmax(queries @ keys.T / temperature, dim=-1)  # (Lq, Lk)
    if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(weights.shape):
        t.expect(False, f"{what} has shape {tuple(got.shape)} = (Lq, Lk): those are the weights. Return the "
                 "weighted sum of the values, weights @ values, of shape (Lq, d_v) = (3, 2).")
    if isinstance(got, tuple):
        t.expect(False, f"{what} returned a tuple of {len(got)} items; return only the output tensor (Lq, d_v).")
    if comparable(got, expected) and not close(got, expected):
        mistakes = [
            (_lookup(queries, keys, values, 1.0), "ignores the temperature: divide the scores by it "
             "(a temperature of 0.25 makes every score 4 times larger) before the softmax."),
            (_lookup(queries, keys, values, temperature), "multiplies the scores by the temperature; "
             "divide by it instead: a low temperature must make the lookup sharper."),
            (_lookup(queries, keys, values, 1 / math.sqrt(4)), "scales the scores by 1/√d (lesson 02's "
             "choice). Here the temperature sets the scale: scores / temperature."),
            (_lookup(queries, keys, values, 1 / (temperature * math.sqrt(4))), "divides by both √d and the "
             "temperature; divide by the temperature only."),
            (torch.softmax(queries @ keys.T / temperature, dim=0) @ values, "normalises the weights over the "
             "queries (dim=0). Each query's weights must sum to one over the keys: softmax along dim=-1."),
            ((queries @ keys.T / temperature) @ values, "uses the raw scores as weights; turn them into "
             "weights with a softmax over the keys first."),
        ]
        for mistake, message in mistakes:
            t.expect(not close(got, mistake), f"{what} {message}")
    t.expect_tensor(got, expected, what)

    queries = t.randn(2, 3, 4)  # (B, Lq, d)
    keys = t.randn(2, 6, 4)  # (B, Lk, d)
    values = t.randn(2, 6, 5)  # (B, Lk, d_v)
    got = t.call(soft_lookup, queries, keys, values, 2.0,
                 what="soft_lookup for a batch, queries (2, 3, 4), keys (2, 6, 4), values (2, 6, 5), "
                 "(note: keys.T reverses all three dimensions; use keys.transpose(-2, -1))")
    t.expect_tensor(got, _lookup(queries, keys, values, 0.5),
                    "soft_lookup for a batch: queries (2, 3, 4), keys (2, 6, 4), values (2, 6, 5), temperature=2 "
                    "(use keys.transpose(-2, -1), not keys.T, so batches work)")

    sharp = t.randn(1, 3) * 30  # (1, d), large scores
    keys = torch.cat([sharp, -sharp, t.randn(2, 3)])  # (4, d), key 0 matches best by far
    values = t.randn(4, 2)  # (4, d_v)
    got = t.call(soft_lookup, sharp, keys, values, 0.01, what="soft_lookup at temperature 0.01")
    if isinstance(got, torch.Tensor) and got.is_floating_point() and not torch.isfinite(got.detach()).all():
        t.expect(False, "soft_lookup gives NaN or inf when the scores are huge (a low temperature of 0.01 "
                 "makes them so): exp overflows. Use torch.softmax (it subtracts each row's maximum for you).")
    t.expect_tensor(got, values[:1], "soft_lookup at temperature 0.01 (it must pick the best key's value, "
                    "like a hard lookup)", atol=1e-4)


soft_lookup = Exercise(
    number="3.1",
    title="a soft dictionary lookup",
    test=_test_soft_lookup,
    hints=[
        "Three steps: scores = how well each query matches each key (a dot product), weights = softmax of "
        "scores / temperature over the keys, output = weights times values.",
        "queries (..., Lq, d) @ keys.transpose(-2, -1) (..., d, Lk) gives scores (..., Lq, Lk). "
        "torch.softmax(scores / temperature, dim=-1) makes each query's row sum to one. "
        "Then weights (..., Lq, Lk) @ values (..., Lk, d_v) → (..., Lq, d_v).",
        "scores = queries @ keys.transpose(-2, -1)  # (..., Lq, Lk)\n"
        "weights = torch.softmax(scores / temperature, dim=-1)  # (..., Lq, Lk)\n"
        "return weights @ values  # (..., Lq, d_v)",
    ],
    success="a sharp lookup at low temperature, a blend at high temperature, for any batch shape.",
)


# ----- Exercise 3.2: queries, keys and values from one matrix ---------------------------
def _test_split_qkv(t: Trial, split_qkv) -> None:
    d_model, d_k, d_v = 6, 3, 4
    x = t.randn(5, d_model)  # (L, d_model)
    w_qkv = t.randn(d_model, 2 * d_k + d_v)  # (d_model, 2 d_k + d_v)
    what = "split_qkv(x (5, 6), W_qkv (6, 10), d_k=3)"
    got = t.call(split_qkv, x, w_qkv, d_k, what=what)
    projected = x @ w_qkv  # (L, 2 d_k + d_v)
    q, k, v = projected[:, :d_k], projected[:, d_k : 2 * d_k], projected[:, 2 * d_k :]
    if got is None:
        t.expect(False, f"{what} returned None. Did you forget to `return q, k, v`?")
    if isinstance(got, torch.Tensor):
        t.expect(False, f"{what} returned one tensor of shape {tuple(got.shape)}; return three: `return q, k, v`.")
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        kind = f"a {type(got).__name__}" + (f" of {len(got)} items" if isinstance(got, (tuple, list)) else "")
        t.expect(False, f"{what} returned {kind}; return the three tensors q, k, v as a tuple.")
    got_q, got_k, got_v = got
    if comparable(got_q, k) and close(got_q, k) and comparable(got_k, q) and close(got_k, q):
        t.expect(False, f"{what}: q and k are swapped. The first d_k columns of x @ W_qkv are the queries, "
                 "the next d_k the keys.")
    if isinstance(got_v, torch.Tensor) and tuple(got_v.shape) == (5, d_k) and close(got_v, projected[:, -d_k:]):
        t.expect(False, f"{what}: v has shape {tuple(got_v.shape)}, the last d_k columns; values may be wider "
                 f"than d_k. v is everything after the first 2·d_k columns, here {d_v} of them.")
    t.expect_tensor(got_q, q, f"q from {what}")
    t.expect_tensor(got_k, k, f"k from {what}")
    t.expect_tensor(got_v, v, f"v from {what}")

    batch = t.randn(2, 7, d_model)  # (B, L, d_model)
    got = t.call(split_qkv, batch, w_qkv, d_k, what="split_qkv for a batch x (2, 7, 6)")
    projected = batch @ w_qkv  # (B, L, 2 d_k + d_v)
    t.expect(isinstance(got, (tuple, list)) and len(got) == 3,
             "split_qkv for a batch x (2, 7, 6) must return three tensors q, k, v.")
    what = "split_qkv for a batch x (2, 7, 6) (split the last dimension: [..., :d_k], not [:, :d_k])"
    t.expect_tensor(got[0], projected[..., :d_k], f"q from {what}")
    t.expect_tensor(got[1], projected[..., d_k : 2 * d_k], f"k from {what}")
    t.expect_tensor(got[2], projected[..., 2 * d_k :], f"v from {what}")


split_qkv = Exercise(
    number="3.2",
    title="queries, keys and values from one matrix",
    test=_test_split_qkv,
    hints=[
        "One matrix multiplication projects x onto all three at once: x @ W_qkv has 2·d_k + d_v columns, "
        "the queries first, then the keys, then the values.",
        "Slice the last dimension: [..., :d_k] for q, [..., d_k:2*d_k] for k, [..., 2*d_k:] for v. "
        "The `...` keeps it working for any batch shape.",
        "projected = x @ W_qkv  # (..., L, 2 d_k + d_v)\n"
        "return projected[..., :d_k], projected[..., d_k:2 * d_k], projected[..., 2 * d_k:]",
    ],
    success="one matrix multiplication, three roles.",
)


# ----- Exercise 3.3: recall accuracy ----------------------------------------------------
def _test_recall_accuracy(t: Trial, recall_accuracy) -> None:
    batch, vocab = 8, 6
    targets = t.randint(0, vocab, (batch,))  # (B,)
    logits = t.randn(batch, vocab)  # (B, V)
    right = torch.tensor([1, 1, 0, 1, 0, 1, 1, 0], dtype=torch.bool, device=t.device)  # 5 of 8 correct
    wrong_guess = (targets + 1) % vocab  # (B,), some other token
    answer = torch.where(right, targets, wrong_guess)  # (B,), the token the model picks
    logits[torch.arange(batch), answer] = logits.abs().max() + 1  # make `answer` the argmax
    expected = 5 / 8
    what = "recall_accuracy(logits (8, 6), targets (8,)) when 5 of 8 answers are right"
    got = t.call(recall_accuracy, logits, targets, what="recall_accuracy(logits (8, 6), targets (8,))")
    if isinstance(got, torch.Tensor) and got.numel() == batch:
        t.expect(False, f"{what} returned a tensor of shape {tuple(got.shape)}, one entry per example. "
                 "Average it into a single number: (...).float().mean().")
    number = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        if math.isclose(number, 100 * expected):
            t.expect(False, f"{what} is {number:g}, a percentage. Return a fraction between 0 and 1 ({expected}).")
        if math.isclose(number, 5):
            t.expect(False, f"{what} is {number:g}, the number of right answers. Divide by the batch size "
                     "(or use .mean()) to get a fraction.")
    t.expect_number(got, expected, what)

    got = t.call(recall_accuracy, logits, answer, what="recall_accuracy(logits (8, 6), targets (8,))")
    t.expect_number(got, 1.0, "recall_accuracy when every answer is right")
    got = t.call(recall_accuracy, logits, (answer + 1) % vocab, what="recall_accuracy(logits (8, 6), targets (8,))")
    t.expect_number(got, 0.0, "recall_accuracy when every answer is wrong")


recall_accuracy = Exercise(
    number="3.3",
    title="recall accuracy",
    test=_test_recall_accuracy,
    hints=[
        "The model's answer is the token with the largest logit. Compare it with the target and count how "
        "often they agree, as a fraction of the batch.",
        "logits.argmax(dim=-1) gives one predicted token per example, shape (B,). Comparing it with targets "
        "gives booleans; .float().mean() turns them into the fraction of right answers.",
        "predictions = logits.argmax(dim=-1)  # (B,)\n"
        "return (predictions == targets).float().mean().item()",
    ],
    success="a fraction in [0, 1], one number for the whole batch.",
)
