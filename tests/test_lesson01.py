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
from attnlib.exercises._core import wrap
from tests.notebook_tools import assert_check_fails, assert_check_passes, exercise_solutions, load_derivations

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


# ----- Exercise 1.1: dot -----------------------------------------------------------------

def test_dot_accepts_the_solution(solutions, capsys):
    assert_check_passes(lesson01.dot, solutions["dot"], capsys)


def test_dot_accepts_einsum(capsys):
    assert_check_passes(lesson01.dot, lambda a, b: torch.einsum("...d,...d->...", a, b), capsys)


def test_dot_says_not_attempted(capsys):
    def dot(a, b):
        raise NotImplementedError("Exercise 1.1 (dot): replace this line with your solution")

    assert_check_fails(lesson01.dot, dot, capsys, "not attempted")


def test_dot_explains_a_missing_return(capsys):
    assert_check_fails(lesson01.dot, lambda a, b: None, capsys, "is None", "return")


def test_dot_explains_summing_everything(capsys):
    assert_check_fails(lesson01.dot, lambda a, b: (a * b).sum(), capsys,
           "shape (4, 6)", "has shape (); expected shape (4,)")


def test_dot_explains_summing_the_wrong_dimension(capsys):
    assert_check_fails(lesson01.dot, lambda a, b: (a * b).sum(dim=0), capsys, "has shape (6,); expected shape (4,)")


def test_dot_shows_torch_dot_failing_on_batches(capsys):
    assert_check_fails(lesson01.dot, torch.dot, capsys, "raised an exception", "1D tensors")


def test_dot_explains_numpy_results(capsys):
    assert_check_fails(lesson01.dot, lambda a, b: (a * b).sum(-1).cpu().numpy(), capsys, "numpy array")


def test_dot_explains_a_changed_dtype(capsys):
    assert_check_fails(lesson01.dot, lambda a, b: (a * b).sum(-1).float(), capsys, "float64", "expected dtype torch.float64")


def test_dot_explains_wrong_values(capsys):
    assert_check_fails(lesson01.dot, lambda a, b: (a + b).sum(-1), capsys, "wrong values", "max absolute error")


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

@pytest.mark.parametrize("exercise", [lesson01.dot, lesson01.one_query_scores, lesson01.cosine_scores])
def test_every_exercise_has_two_to_four_hints_given_in_order(exercise, capsys):
    assert 2 <= len(exercise.hints) <= 4
    exercise._hints_given = 0
    try:
        exercise.hint()
        first = capsys.readouterr().out
        exercise.hint()
        second = capsys.readouterr().out
    finally:
        exercise._hints_given = 0
    assert f"Hint 1/{len(exercise.hints)} for Exercise {exercise.number}" in first and wrap(exercise.hints[0]) in first
    assert f"Hint 2/{len(exercise.hints)}" in second and wrap(exercise.hints[1]) in second
