"""Exercises of lesson 01 (dot products and similarity): a hand-made query, batched scores, cosines."""

from __future__ import annotations

import math

import torch

from ._core import Exercise, Trial


def _expect_layout(t: Trial, got, like: torch.Tensor, what: str) -> torch.Tensor:
    """``got`` must be a finite tensor with the type, shape, dtype and device of ``like``.

    Values are not compared yet (infinite tolerance), so that a property check can
    explain what is wrong before a plain "wrong values" message would.
    """
    return t.expect_tensor(got, like, what, atol=math.inf)


def _no_nan_from_zero_vector(t: Trial, got, what: str) -> None:
    """A NaN where a zero vector was involved means 0 / 0: say so plainly."""
    if isinstance(got, torch.Tensor) and got.is_floating_point() and torch.isnan(got).any():
        t.expect(False, f"{what} contains NaN: a zero vector has length 0, and 0 / 0 is NaN. "
                 "Clamp the lengths (e.g. `.clamp_min(eps)`) before dividing, so a zero vector "
                 "gets cosine 0.")


# ----- Exercise 1.1: cat_query ---------------------------------------------------------

FEATURES = ("alive", "size", "speed", "furry")
KEY_WORDS = ("mouse", "cat", "horse", "bicycle", "car", "truck")
KEYS = (  # section 6's keys, one row per word, one column per feature
    (1.0, -1.0, 0.0, 1.0),    # mouse
    (1.0, -0.5, 0.3, 1.0),    # cat
    (1.0, 1.0, 0.8, 0.3),     # horse
    (-1.0, -0.5, 0.2, -1.0),  # bicycle
    (-1.0, 0.5, 0.9, -1.0),   # car
    (-1.0, 1.0, 0.4, -1.0),   # truck
)
CAT_MARGIN = 0.1  # the cat must beat every other key by at least this much


def _scores_text(scores: torch.Tensor) -> str:
    return ", ".join(f"{word} {s:.2f}" for word, s in zip(KEY_WORDS, scores.tolist()))


def _test_cat_query(t: Trial, cat_query) -> None:
    what = "cat_query()"
    got = t.call(cat_query, what=what)
    if isinstance(got, torch.Tensor):
        got = got.detach().cpu()  # the query may live on any device; the check runs on the CPU
    t.expect_tensor(got, torch.zeros(4), f"{what} (a query with one entry per feature: {', '.join(FEATURES)})",
                    atol=math.inf, check_dtype=False)
    t.expect(got.is_floating_point(),
             f"{what} has dtype {got.dtype}; the keys are floats, so write the entries as floats "
             "(1.0, not 1), e.g. torch.tensor([..., ...], dtype=torch.float32).")
    query = got.double()  # (4,)
    worst = int(query.abs().argmax())
    t.expect(float(query.abs().max()) <= 1.0 + 1e-6,
             f"every entry of the query must lie between -1 and 1 (otherwise any margin is easy: multiply the "
             f"query by 100); yours has {float(query[worst]):.3g} for '{FEATURES[worst]}'.")

    keys = torch.tensor(KEYS, dtype=torch.float64)  # (6, 4)
    scores = keys @ query  # (6,)
    cat = KEY_WORDS.index("cat")
    best = int(scores.argmax())
    if best != cat:
        winner = KEY_WORDS[best]
        lost = f"{winner} beats cat ({_scores_text(scores)})"
        if torch.allclose(query, keys[cat]):
            t.expect(False, f"the cat's own key as the query picks the {winner}: {lost}. Its size weight is "
                     "negative (-0.5), so it rewards being small, and the mouse is smaller than the cat (-1 "
                     "against -0.5): that gains the mouse more (0.25) than the cat's speed gains the cat (0.09). "
                     "A dot product rewards going further in the query's direction, not matching it (the cosine "
                     "would pick the cat). Design the query from the differences between the keys instead.")
        if winner == "mouse":
            t.expect(False, f"your query picks the mouse: {lost}. Mouse and cat differ only in size (cat -0.5, "
                     "mouse -1) and speed (cat 0.3, mouse 0), so q·cat - q·mouse = 0.5·size + 0.3·speed: "
                     "those two weights decide between them.")
        if winner == "horse":
            t.expect(False, f"your query picks the horse: {lost}. The horse is bigger (1 against -0.5) and "
                     "faster (0.8 against 0.3) than the cat, but less furry (0.3 against 1): q·cat - q·horse = "
                     "-1.5·size - 0.5·speed + 0.7·furry.")
        t.expect(False, f"your query picks the {winner}: {lost}. Animals have alive = 1 and furry = 1, "
                 "vehicles -1: positive weights on alive and furry keep the vehicles down.")
    others = torch.cat([scores[:cat], scores[cat + 1:]])  # (5,)
    margin = float(scores[cat] - others.max())
    runner_up = [w for w in KEY_WORDS if w != "cat"][int(others.argmax())]
    t.expect(margin >= CAT_MARGIN - 1e-9,
             f"your query picks the cat, but only by {margin:.3f} over the {runner_up} ({_scores_text(scores)}); "
             f"it must win by at least {CAT_MARGIN}. Which features make the cat differ from the {runner_up}?")


cat_query = Exercise(
    number="1.1",
    title="a query that finds the cat",
    test=_test_cat_query,
    hints=[
        "Compare two keys at a time. The cat beats the mouse when q·cat > q·mouse, that is when "
        "q·(cat - mouse) > 0: only the features in which the two keys differ matter.",
        "cat - mouse = [0, 0.5, 0.3, 0] and cat - horse = [0, -1.5, -0.5, 0.7] (alive, size, speed, furry). "
        "Against the vehicles, alive and furry (+1 for animals, -1 for vehicles) already help: give them "
        "weight 1.",
        "Leave size at 0. Then q·(cat - mouse) = 0.3·speed and q·(cat - horse) = -0.5·speed + 0.7·furry. "
        "Pick speed and furry in [-1, 1] that make both at least 0.1, then\n"
        "return torch.tensor([alive, size, speed, furry])",
    ],
    success="the cat wins by a margin: a query describes what to look for, feature by feature.",
)


# ----- Exercise 1.2: one_query_scores --------------------------------------------------

def _explain_one_query_shape(t: Trial, got, batch: int, n: int) -> None:
    """Recognise the shapes that typical mistakes produce and say what went wrong."""
    if not isinstance(got, torch.Tensor) or tuple(got.shape) == (batch, n):
        return
    shape = tuple(got.shape)
    if shape == (batch, n, 1):
        t.expect(False, f"one_query_scores returned shape {shape}; expected ({batch}, {n}). The scores "
                 "still carry the column dimension of size 1: remove it with `.squeeze(-1)`.")
    if batch != n and shape in {(batch, n, batch), (batch, batch, n)}:
        t.expect(False, f"one_query_scores returned shape {shape}; expected ({batch}, {n}). It looks like "
                 "every query was scored against the keys of every sequence. Query b must only meet "
                 "keys[b]: make it a column of shape (B, d, 1) with `query.unsqueeze(-1)`, so that `@` "
                 "pairs the batches.")


def _test_one_query_scores(t: Trial, one_query_scores) -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]], device=t.device)  # (B, d) = (2, 2)
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], device=t.device).expand(2, 3, 2)  # (B, n, d)
    what = ("one_query_scores(query, keys) for query [[1, 0], [0, 1]] and, in both sequences, "
            "keys [[1, 0], [0, 1], [2, 2]] (expected [[1, 0, 2], [0, 1, 2]])")
    got = t.call(one_query_scores, query, keys, what=what)
    _explain_one_query_shape(t, got, 2, 3)
    t.expect_tensor(got, torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0]], device=t.device), what)

    for batch, n, d in [(3, 5, 4), (1, 7, 8)]:
        query, keys = t.randn(batch, d), t.randn(batch, n, d)  # (B, d), (B, n, d)
        expected = (keys * query[:, None, :]).sum(dim=-1)  # (B, n)
        what = (f"one_query_scores(query, keys) for query {(batch, d)} and keys {(batch, n, d)} "
                f"(expected shape {(batch, n)})")
        got = t.call(one_query_scores, query, keys, what=what)
        _explain_one_query_shape(t, got, batch, n)
        t.expect_tensor(got, expected, what)

    if t.device.type != "mps":  # mps has no float64
        query, keys = t.randn(2, 6, dtype=torch.float64), t.randn(2, 4, 6, dtype=torch.float64)
        what = "one_query_scores for float64 inputs (the result keeps the inputs' dtype)"
        got = t.call(one_query_scores, query, keys, what=what)
        t.expect_tensor(got, (keys * query[:, None, :]).sum(dim=-1), what)


one_query_scores = Exercise(
    number="1.2",
    title="one query per sequence",
    test=_test_one_query_scores,
    hints=[
        "For one sequence this is section 4's matrix–vector product: keys[b] (n, d) @ query[b] (d,) → (n,). "
        "You want all B of them at once, without a loop.",
        "`@` on 3-D tensors multiplies matrix by matrix, batch by batch: (B, n, d) @ (B, d, 1) → (B, n, 1). "
        "So turn each query into a column of shape (B, d, 1) with `query.unsqueeze(-1)`.",
        "The result (B, n, 1) has a column dimension of size 1 left over; `.squeeze(-1)` removes it. "
        "(`query @ keys.transpose(-2, -1)` would pair every query with every sequence's keys instead.)",
        "The key line, then drop the leftover dimension:\n"
        "scores = keys @ query.unsqueeze(-1)  # (B, n, d) @ (B, d, 1) -> (B, n, 1)",
    ],
    success="each sequence's query scored against its own keys, in one batched product.",
)


# ----- Exercise 1.3: cosine_scores -----------------------------------------------------

def _reference_cosine_scores(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """(..., Lq, d), (..., Lk, d) -> (..., Lq, Lk); a zero vector gives cosine 0."""
    unit_query = query / torch.linalg.vector_norm(query, dim=-1, keepdim=True).clamp_min(1e-12)  # (..., Lq, d)
    unit_key = key / torch.linalg.vector_norm(key, dim=-1, keepdim=True).clamp_min(1e-12)  # (..., Lk, d)
    return unit_query @ unit_key.transpose(-2, -1)  # (..., Lq, Lk)


def _test_cosine_scores(t: Trial, cosine_scores) -> None:
    x = t.randn(5, 8) * torch.linspace(0.5, 4.0, 5, device=t.device)[:, None]  # (5, d), varied lengths
    what = "cosine_scores(x, x) for x of shape (5, 8)"
    got = t.call(cosine_scores, x, x, what=what)
    _expect_layout(t, got, torch.zeros(5, 5, device=t.device), what)
    diagonal = got.diagonal()  # (5,)
    t.expect(torch.allclose(diagonal, torch.ones_like(diagonal), atol=1e-4),
             "the cosine of a vector with itself must be 1, but the diagonal of cosine_scores(x, x) is "
             f"{[round(v, 3) for v in diagonal.tolist()]}. Did you divide by the lengths of both vectors?")

    query, key = t.randn(3, 8), t.randn(4, 8)  # (Lq, d), (Lk, d)
    what = "cosine_scores(query, key) for query (3, 8) and key (4, 8)"
    plain = t.call(cosine_scores, query, key, what=what)
    _expect_layout(t, plain, torch.zeros(3, 4, device=t.device), what)
    what = "cosine_scores(3 * query, 0.25 * key) for query (3, 8) and key (4, 8)"
    stretched = t.call(cosine_scores, 3.0 * query, 0.25 * key, what=what)
    _expect_layout(t, stretched, torch.zeros(3, 4, device=t.device), what)
    t.expect(torch.allclose(plain, stretched, atol=1e-4),
             "the cosine must not change when vectors are stretched, but cosine_scores(3 * query, 0.25 * key) "
             f"differs from cosine_scores(query, key) by up to {(plain - stretched).abs().max().item():.3g}. "
             "Divide each dot product by the product of the two lengths (not squared lengths).")

    query = torch.tensor([[1.0, 0.0], [1.0, 1.0]], device=t.device)  # (2, 2)
    key = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0]], device=t.device)  # (3, 2)
    half = 1 / math.sqrt(2)
    what = ("cosine_scores for query [[1, 0], [1, 1]] and key [[2, 0], [0, 3], [-1, -1]] "
            "(expected [[1, 0, -0.707], [0.707, 0.707, -1]])")
    t.expect_tensor(t.call(cosine_scores, query, key, what=what),
                    torch.tensor([[1.0, 0.0, -half], [half, half, -1.0]], device=t.device), what)

    for q_shape, k_shape in [((2, 4, 8), (2, 6, 8)), ((2, 3, 5, 16), (2, 3, 7, 16))]:
        query, key = t.randn(*q_shape), t.randn(*k_shape)
        expected = _reference_cosine_scores(query, key)  # (..., Lq, Lk)
        what = f"cosine_scores for query {q_shape} and key {k_shape} (expected shape {tuple(expected.shape)})"
        t.expect_tensor(t.call(cosine_scores, query, key, what=what), expected, what)

    query, key = t.randn(3, 4), t.randn(5, 4)  # (Lq, d), (Lk, d)
    query[1] = 0.0  # a zero query
    key[2] = 0.0  # and a zero key
    what = "cosine_scores with a zero vector in row 1 of query and row 2 of key"
    got = t.call(cosine_scores, query, key, what=what)
    _no_nan_from_zero_vector(t, got, what)
    t.expect_tensor(got, _reference_cosine_scores(query, key),
                    f"{what} (row 1 and column 2 of the result should be 0)")


cosine_scores = Exercise(
    number="1.3",
    title="cosine scores",
    test=_test_cosine_scores,
    hints=[
        "cos(q, k) = (q · k) / (‖q‖ ‖k‖). Dividing q by ‖q‖ and k by ‖k‖ first gives unit vectors, "
        "whose plain dot product is the cosine.",
        "`query.norm(dim=-1, keepdim=True)` is (..., Lq, 1), so `query / query.norm(dim=-1, keepdim=True)` "
        "broadcasts to unit vectors (..., Lq, d). Same for key. Then use section 4's "
        "`unit_query @ unit_key.transpose(-2, -1)`.",
        "A zero vector has norm 0, and 0 / 0 is NaN. Divide by `norm.clamp_min(eps)` instead: a zero "
        "vector stays zero, and its dot product with anything is 0.",
        "The key line; do the same for key, then one matrix product as in section 4:\n"
        "unit_query = query / query.norm(dim=-1, keepdim=True).clamp_min(eps)  # (..., Lq, d)",
    ],
    success="every query against every key, blind to length, and 0 for zero vectors.",
)
