"""Lesson 01: its derivations agree with attnlib, and its exercise checkers judge correctly.

attnlib's ``similarity.py`` itself is tested in its own test file; here we prove that the
notebook's from-scratch ``dot_product_scores`` and ``cosine_similarity`` cannot drift
from attnlib's, and that each checker accepts the master's solution and explains
typical wrong answers.
"""

import pytest
import torch
import torch.nn.functional as F

import attnlib
from attnlib.exercises import lesson01
from tests.notebook_tools import (
    MASTERS, assert_check_fails, assert_check_passes, assert_hints_build_up, exercise_solutions, gives_whole_solution,
    load_derivations, read,
)

NOTEBOOK = "01_dot_products.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


# ----- derivations agree with attnlib ------------------------------------------------------

@pytest.mark.parametrize(
    "q_shape, k_shape",
    [((5, 8), (7, 8)), ((3, 5, 8), (3, 7, 8)), ((2, 3, 5, 8), (2, 3, 7, 8)), ((2, 3, 5, 8), (7, 8))],
)
def test_derived_dot_product_scores_equals_attnlib(derived, q_shape, k_shape):
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(*q_shape, generator=generator)  # (..., Lq, d)
    key = torch.randn(*k_shape, generator=generator)  # (..., Lk, d)
    ours = derived["dot_product_scores"](query, key)  # (..., Lq, Lk)
    torch.testing.assert_close(ours, attnlib.dot_product_scores(query, key))
    assert ours.shape[-2:] == (q_shape[-2], k_shape[-2])
    # and both are the dot products they claim to be
    torch.testing.assert_close(ours[..., 2, 4], (query[..., 2, :] * key[..., 4, :]).sum(-1))


@pytest.mark.parametrize("a_shape, b_shape", [((16,), (16,)), ((4, 5, 16), (4, 5, 16)), ((4, 5, 16), (16,))])
def test_derived_cosine_similarity_equals_attnlib_and_torch(derived, a_shape, b_shape):
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(*a_shape, generator=generator, dtype=torch.float64)  # (..., d)
    b = torch.randn(*b_shape, generator=generator, dtype=torch.float64)  # (..., d)
    ours = derived["cosine_similarity"](a, b)  # (...)
    torch.testing.assert_close(ours, attnlib.cosine_similarity(a, b))
    torch.testing.assert_close(ours, F.cosine_similarity(a, b, dim=-1))


def test_derived_cosine_similarity_gives_zero_for_zero_vectors_like_attnlib(derived):
    a = torch.randn(3, 6)  # (3, d)
    b = torch.randn(3, 6)  # (3, d)
    a[1] = 0.0
    ours = derived["cosine_similarity"](a, b)  # (3,)
    assert torch.isfinite(ours).all() and ours[1].item() == 0.0
    torch.testing.assert_close(ours, attnlib.cosine_similarity(a, b))


def test_notebook_derives_both_functions(derived):
    assert callable(derived["dot_product_scores"]) and callable(derived["cosine_similarity"])


# ----- Exercise 1.1: cat_query --------------------------------------------------------------

def test_cat_query_accepts_the_solution(solutions, capsys):
    assert_check_passes(lesson01.cat_query, solutions["cat_query"], capsys)


def test_cat_query_keys_are_the_notebooks(derived):
    """The checker scores against section 6's keys: the same table as the notebook's."""
    [cell] = [c for c in read(MASTERS / NOTEBOOK).cells if c.cell_type == "code" and "key_words = " in c.source]
    namespace = {**derived, "device": torch.device("cpu")}
    exec(compile(cell.source, f"{NOTEBOOK}:section 6", "exec"), namespace)
    assert tuple(namespace["key_words"]) == lesson01.KEY_WORDS
    torch.testing.assert_close(namespace["keys"], torch.tensor(lesson01.KEYS))
    assert namespace["features"] == list(lesson01.FEATURES)


@pytest.mark.parametrize("query", [[1.0, 0.0, 1.0, 1.0], [1.0, -0.05, 1.0, 1.0], [0.5, -0.05, 0.8, 1.0]])
def test_cat_query_accepts_other_good_queries(query, capsys):
    assert_check_passes(lesson01.cat_query, lambda: torch.tensor(query), capsys)
    assert_check_passes(lesson01.cat_query, lambda: torch.tensor(query, dtype=torch.float64), capsys)


def test_cat_query_says_not_attempted(capsys):
    def cat_query():
        raise NotImplementedError("Exercise 1.1 (cat query): replace this line with your solution")

    assert_check_fails(lesson01.cat_query, cat_query, capsys, "not attempted")


def test_cat_query_explains_the_cats_own_key(capsys):
    assert_check_fails(lesson01.cat_query, lambda: torch.tensor([1.0, -0.5, 0.3, 1.0]), capsys,
                       "the cat's own key as the query picks the mouse", "mouse 2.50, cat 2.34", "cosine")


def test_cat_query_explains_the_mouse_and_the_horse(capsys):
    assert_check_fails(lesson01.cat_query, lambda: torch.tensor([1.0, -1.0, 0.0, 1.0]), capsys,
                       "picks the mouse", "0.5·size + 0.3·speed")
    assert_check_fails(lesson01.cat_query, lambda: torch.tensor([1.0, 1.0, 1.0, 0.0]), capsys,
                       "picks the horse", "-1.5·size - 0.5·speed + 0.7·furry")
    assert_check_fails(lesson01.cat_query, lambda: torch.tensor([-1.0, 0.0, 0.0, -1.0]), capsys,
                       "picks the bicycle", "alive and furry")


def test_cat_query_explains_a_small_margin(capsys):
    assert_check_fails(lesson01.cat_query, lambda: torch.tensor([1.0, 0.0, 0.2, 1.0]), capsys,
                       "picks the cat, but only by 0.060 over the mouse", "at least 0.1")


def test_cat_query_refuses_entries_outside_minus_one_to_one(capsys):
    assert_check_fails(lesson01.cat_query, lambda: torch.tensor([2.0, 0.0, 3.0, 3.0]), capsys,
                       "between -1 and 1", "3 for 'speed'")


@pytest.mark.parametrize("answer, fragments", [
    (None, ("is None", "return")),
    ([1.0, 0.0, 1.0, 1.0], ("is a list", "torch.Tensor")),
    (torch.ones(1, 4), ("has shape (1, 4); expected shape (4,)",)),
    (torch.tensor([1, 0, 1, 1]), ("dtype torch.int64", "1.0, not 1")),
    (torch.tensor([1.0, float("nan"), 1.0, 1.0]), ("contains NaN",)),
])
def test_cat_query_explains_odd_answers(answer, fragments, capsys):
    assert_check_fails(lesson01.cat_query, lambda: answer, capsys, *fragments)


def test_cat_query_last_hint_does_not_give_the_numbers():
    last = lesson01.cat_query.hints[-1]
    assert "return torch.tensor([alive, size, speed, furry])" in last
    assert "1.0, 0.0, 1.0, 1.0" not in last and "[1, 0, 1, 1]" not in last


# ----- Exercise 1.2: one_query_scores --------------------------------------------------

def test_one_query_scores_accepts_the_solution(solutions, capsys):
    assert_check_passes(lesson01.one_query_scores, solutions["one_query_scores"], capsys)


def test_one_query_scores_accepts_other_correct_ways(capsys):
    assert_check_passes(lesson01.one_query_scores, lambda q, k: torch.einsum("bd,bnd->bn", q, k), capsys)
    assert_check_passes(lesson01.one_query_scores, lambda q, k: (q.unsqueeze(1) @ k.transpose(1, 2)).squeeze(1), capsys)


def test_one_query_scores_explains_mixing_sequences(capsys):
    # (B, d) @ (B, d, n) broadcasts to (B, B, n): every query against every sequence's keys
    assert_check_fails(lesson01.one_query_scores, lambda q, k: q @ k.transpose(-2, -1), capsys,
           "shape (2, 2, 3)", "every query was scored against the keys of every sequence", "unsqueeze(-1)")


def test_one_query_scores_explains_a_leftover_column(capsys):
    assert_check_fails(lesson01.one_query_scores, lambda q, k: k @ q.unsqueeze(-1), capsys, "shape (2, 3, 1)", "squeeze(-1)")


def test_one_query_scores_shows_a_broadcasting_error(capsys):
    assert_check_fails(lesson01.one_query_scores, lambda q, k: (k * q).sum(-1), capsys, "raised an exception")


def test_one_query_scores_explains_wrong_values(capsys):
    # scores every sequence's keys with the first sequence's query
    assert_check_fails(lesson01.one_query_scores, lambda q, k: (k @ q[0].unsqueeze(-1)).squeeze(-1), capsys,
           "query [[1, 0], [0, 1]]", "wrong values", "max absolute error")


def test_one_query_scores_explains_a_float32_result_for_float64_inputs(capsys):
    def looped(q, k):
        out = torch.zeros(k.shape[0], k.shape[1], device=k.device)  # float32 whatever the inputs
        for b in range(k.shape[0]):
            out[b] = k[b] @ q[b]
        return out

    assert_check_fails(lesson01.one_query_scores, looped, capsys, "float64", "expected dtype torch.float64")


# ----- Exercise 1.3: cosine_scores ----------------------------------------------------

def test_cosine_scores_accepts_the_solution(solutions, capsys):
    assert_check_passes(lesson01.cosine_scores, solutions["cosine_scores"], capsys)


def test_cosine_scores_accepts_torch_cosine_similarity_with_broadcasting(capsys):
    def cosine_scores(query, key):
        return F.cosine_similarity(query.unsqueeze(-2), key.unsqueeze(-3), dim=-1)  # (..., Lq, Lk)

    assert_check_passes(lesson01.cosine_scores, cosine_scores, capsys)


def test_cosine_scores_explains_plain_dot_products(capsys):
    assert_check_fails(lesson01.cosine_scores, lambda q, k: q @ k.transpose(-2, -1), capsys,
           "cosine of a vector with itself must be 1", "both vectors")


def test_cosine_scores_explains_broken_scale_invariance(capsys):
    def cosine_scores(query, key):  # divides by ‖q‖² instead of ‖q‖ ‖k‖
        return (query @ key.transpose(-2, -1)) / (query.norm(dim=-1, keepdim=True) ** 2)

    assert_check_fails(lesson01.cosine_scores, cosine_scores, capsys, "must not change when vectors are stretched")


def test_cosine_scores_explains_nan_from_zero_vectors(capsys):
    def cosine_scores(query, key):  # no clamp: 0 / 0 for a zero vector
        unit_query = query / query.norm(dim=-1, keepdim=True)
        unit_key = key / key.norm(dim=-1, keepdim=True)
        return unit_query @ unit_key.transpose(-2, -1)

    assert_check_fails(lesson01.cosine_scores, cosine_scores, capsys, "contains NaN", "zero vector", "clamp_min")


def test_cosine_scores_explains_swapped_arguments(capsys):
    assert_check_fails(lesson01.cosine_scores, lambda q, k: F.cosine_similarity(k.unsqueeze(-2), q.unsqueeze(-3), dim=-1),
           capsys, "has shape (4, 3); expected shape (3, 4)")


@pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")
def test_cosine_scores_explains_no_batch_support(capsys):
    def cosine_scores(query, key):  # .T reverses all dimensions: fine in 2-D, wrong for batches
        unit_query = query / query.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        unit_key = key / key.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return unit_query @ unit_key.T

    assert_check_fails(lesson01.cosine_scores, cosine_scores, capsys, "query (2, 4, 8) and key (2, 6, 8)", "raised an exception")


def test_cosine_scores_reports_exceptions_without_crashing(capsys):
    assert_check_fails(lesson01.cosine_scores, lambda q, k: q.undefined_method(), capsys, "raised an exception", "AttributeError")


# ----- hints ---------------------------------------------------------------------------------

@pytest.mark.parametrize("exercise", [lesson01.cat_query, lesson01.one_query_scores, lesson01.cosine_scores])
def test_every_exercise_has_two_to_four_hints_given_in_order(exercise, capsys):
    assert_hints_build_up(exercise, capsys)


@pytest.mark.parametrize("exercise, function", [(lesson01.cat_query, "cat_query"),
                                                (lesson01.one_query_scores, "one_query_scores"),
                                                (lesson01.cosine_scores, "cosine_scores")])
def test_last_hint_shows_a_key_line_not_the_whole_solution(exercise, function):
    assert not gives_whole_solution(exercise.hints[-1], NOTEBOOK, function)
