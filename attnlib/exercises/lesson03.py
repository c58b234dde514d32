"""Exercises of lesson 03 (queries, keys and values).

3.1 ``soft_lookup``: softmax(q kᵀ / temperature) v for any batch shape.
3.2 ``split_qkv``: queries, keys and values from one stored matrix and one multiplication.
3.3 ``recall_weights``: W_Q, W_K and W_V set by hand so that attention solves associative recall.

Each checker first looks for this lesson's classic mistakes (a forgotten temperature,
softmax over the queries, the weights returned instead of the values, q and k split
in the wrong order, a lookup too soft or one that reads the values, ...) and names
them; only then does it fall back to a plain comparison with the right answer.
"""

from __future__ import annotations

import math

import torch

from ._core import Exercise, Failure, Trial, close, comparable


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
        "weights = torch.softmax(scores / temperature, dim=-1)  # (..., Lq, Lk): each query's row sums to one",
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
        "v = projected[..., 2 * d_k:]  # (..., L, d_v): every column after the queries' and the keys'",
    ],
    success="one matrix multiplication, three roles.",
)


# ----- Exercise 3.3: a lookup set by hand -----------------------------------------------
MATCH_SHARE = 0.95  # the least weight the matching slot must get


def _recall_inputs(t: Trial, batch: int, num_pairs: int, num_keys: int, num_values: int):
    """One-hot recall inputs: asking (B, 1, d), slots (B, P, d), the asked slot (B,), its value (B,).

    A slot is [one-hot key | one-hot value]; the asking vector is [one-hot key | 0]; d = num_keys + num_values.
    """
    keys = torch.stack([torch.randperm(num_keys, generator=t.generator)[:num_pairs] for _ in range(batch)])  # (B, P)
    values = torch.randint(0, num_values, (batch, num_pairs), generator=t.generator)  # (B, P)
    asked = torch.randint(0, num_pairs, (batch,), generator=t.generator)  # (B,)
    features = torch.eye(num_keys + num_values)  # (d, d)
    slots = features[keys] + features[num_keys + values]  # (B, P, d)
    asking = features[keys.gather(1, asked[:, None])]  # (B, 1, d)
    return asking, slots, asked, values.gather(1, asked[:, None])[:, 0]


def _unpack_recall_weights(got, what: str, d_model: int, num_keys: int, num_values: int):
    if got is None:
        raise Failure(f"{what} returned None. Did your function forget to `return W_Q, W_K, W_V`?")
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        kind = type(got).__name__ + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else "")
        raise Failure(f"{what} returned a {kind}; expected three matrices `(W_Q, W_K, W_V)`.")
    for name, W in zip(("W_Q", "W_K", "W_V"), got):
        if not isinstance(W, torch.Tensor):
            raise Failure(f"{what}: {name} is a {type(W).__name__}; a torch.Tensor was expected.")
        if W.dim() != 2 or W.shape[0] != d_model:
            raise Failure(f"{what}: {name} has shape {tuple(W.shape)}; expected (d_model, ...) with d_model = "
                          f"num_keys + num_values = {d_model}: one row per input feature, as in x @ {name}.")
        if W.dtype != torch.float32:
            raise Failure(f"{what}: {name} has dtype {W.dtype}; expected torch.float32 (the default of torch.eye "
                          "and torch.zeros), the dtype of the inputs.")
        if not torch.isfinite(W).all():
            raise Failure(f"{what}: {name} contains NaN or infinity; use a large but finite scale.")
    W_Q, W_K, W_V = (W.detach().cpu() for W in got)
    if W_Q.shape != W_K.shape:
        raise Failure(f"{what}: W_Q has shape {tuple(W_Q.shape)} but W_K has {tuple(W_K.shape)}; queries and keys "
                      "must have the same width d_k to be compared by a dot product.")
    if W_V.shape[1] != num_values:
        raise Failure(f"{what}: W_V has shape {tuple(W_V.shape)}; expected (d_model, num_values) = "
                      f"{(d_model, num_values)}: the read-out is the answer, one entry per value, so W_V must "
                      "hand over the value part of a slot and nothing else.")
    return W_Q, W_K, W_V


def _lookup_with(asking, slots, W_Q, W_K, W_V):
    """Scaled dot-product attention of the asking vector over the slots: weights (B, P), read-out (B, d_v)."""
    q, k, v = asking @ W_Q, slots @ W_K, slots @ W_V  # (B, 1, d_k), (B, P, d_k), (B, P, d_v)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)  # (B, 1, P)
    return weights[:, 0], (weights @ v)[:, 0]  # (B, P), (B, d_v)


def _test_recall_weights(t: Trial, recall_weights) -> None:
    for num_keys, num_values, num_pairs in ((16, 16, 6), (8, 10, 8), (26, 4, 3)):
        d_model = num_keys + num_values
        what = f"recall_weights(num_keys={num_keys}, num_values={num_values})"
        got = t.call(recall_weights, num_keys, num_values, what="recall_weights")
        W_Q, W_K, W_V = _unpack_recall_weights(got, what, d_model, num_keys, num_values)
        asking, slots, asked, answer = _recall_inputs(t, 64, num_pairs, num_keys, num_values)
        weights, read = _lookup_with(asking, slots, W_Q, W_K, W_V)  # (B, P), (B, num_values)
        where = f"with {num_pairs} slots"
        if not (torch.isfinite(weights).all() and torch.isfinite(read).all()):
            raise Failure(f"{what} gives NaN attention weights {where}: the scores overflow. A score that "
                          "beats the others by about 10 (after the division by √d_k) is plenty.")
        rows = torch.arange(len(asked))  # (B,)
        on_match = weights[rows, asked]  # (B,), the weight on the slot holding the asked key
        looked = weights.argmax(dim=-1)  # (B,)
        right_place = (looked == asked).float().mean().item()
        if right_place < 1.0:
            fresh = slots.clone()  # the same keys with other values: a lookup by key must not notice
            fresh[..., num_keys:] = torch.eye(num_values)[torch.randint(0, num_values, asked.shape + (num_pairs,),
                                                                        generator=t.generator)]
            moved = (_lookup_with(asking, fresh, W_Q, W_K, W_V)[0] - weights).abs().max().item()
            if on_match.max() < weights.max(dim=-1).values.min() and right_place == 0.0:
                raise Failure(f"{what}: the slot holding the asked key gets the *smallest* weight {where}: a "
                              "negative scale turns the match into the worst score. Make the matching score the "
                              "largest.")
            if moved > 1e-3:
                raise Failure(f"{what}: changing only the *values* in the slots moves the attention (by up to "
                              f"{moved:.2f}), so the scores read the value part. A lookup by key must ignore it: "
                              "keep the rows of W_K for the value features (rows num_keys and beyond) at zero.")
            if (weights.max(dim=-1).values - weights.min(dim=-1).values).max() < 1e-4:
                raise Failure(f"{what}: every slot gets the same weight {where}: the scores do not depend on the "
                              "keys. The query of key a must score high against a slot whose key is a, and low "
                              "against the others.")
            raise Failure(f"{what}: only {right_place:.0%} of the questions put their largest weight on the slot "
                          f"holding the asked key {where}. The score q·k must be largest when the key part of "
                          "the slot equals the asked key.")
        if on_match.min() < MATCH_SHARE:
            raise Failure(f"{what}: every question looks most at the right slot, but too softly: the smallest "
                          f"weight on it is {on_match.min().item():.3f} {where}, and {MATCH_SHARE} is wanted. "
                          "Remember the 1/√d_k in the scores; a score gap s gives the match e^s / (e^s + P - 1), "
                          "so scale W_Q (or W_K) up until the gap is about 10.")
        found = read.argmax(dim=-1)  # (B,), the value the read-out points at
        if not torch.equal(found, answer):
            reads_keys = W_V[:num_keys].abs().sum() > 0 and W_V[num_keys:].abs().sum() == 0
            if reads_keys:
                raise Failure(f"{what}: the attention is right, but W_V hands over the *key* part of the slot "
                              "(rows 0 .. num_keys - 1). The answer is the value: W_V must read the value "
                              "features, rows num_keys and beyond.")
            share = (found == answer).float().mean().item()
            raise Failure(f"{what}: the attention is right, but the read-out's largest entry is the asked slot's "
                          f"value in only {share:.0%} of the questions {where}. W_V must copy a slot's one-hot "
                          "value into the read-out, entry j for value j.")


recall_weights = Exercise(
    number="3.3",
    title="a lookup set by hand",
    test=_test_recall_weights,
    hints=[
        "Write down what the vectors hold. The asking vector is [e_q | 0]; a slot is [e_key | e_value]. If the "
        "query were q = e_q and each key k = e_key (the slot's key part, its value dropped), q·k would be 1 for "
        "the slot holding the asked key and 0 for every other: a lookup.",
        "A matrix that keeps some features and drops the others is a slice of the identity: with "
        "d = num_keys + num_values, `torch.eye(d)[:, :num_keys]` keeps the key part and "
        "`torch.eye(d)[:, num_keys:]` the value part. But scores of 1 and 0, divided by √d_k, make a soft "
        "lookup: with P slots the match gets e^s / (e^s + P - 1) for a score gap s. Make s large.",
        "W_Q = 10 * math.sqrt(num_keys) * torch.eye(num_keys + num_values)[:, :num_keys]  # a gap of 10 after ÷√d_k",
    ],
    success="the right slot gets (almost) all the weight and hands over its value: a lookup without training.",
)
