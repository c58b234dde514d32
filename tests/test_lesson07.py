"""Lesson 07: its derivations equal attnlib's positions, and its exercise checkers judge fairly."""

import math

import pytest
import torch

import attnlib
from attnlib.exercises import lesson07
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

NOTEBOOK = "07_positional_encoding.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


def _raise(error):
    raise error


# ----- derivations ---------------------------------------------------------------------------
def test_derivation_cells_define_the_four_encodings(derived):
    for name in ("sinusoidal_encoding", "LearnedPositions", "rope", "alibi_slopes_power_of_two", "alibi_penalty"):
        assert callable(derived.get(name)), name
    for name in ("shift_matrix", "rope_rotate_half", "alibi_slopes"):  # the learner writes these
        assert name not in derived


@pytest.mark.parametrize("max_len, d_model", [(1, 2), (50, 16), (128, 64), (300, 10)])
def test_sinusoidal_derivation_equals_attnlib(derived, max_len, d_model):
    torch.testing.assert_close(derived["sinusoidal_encoding"](max_len, d_model),
                               attnlib.sinusoidal_positional_encoding(max_len, d_model))


def test_learned_derivation_equals_attnlib_clamped_table(derived):
    torch.manual_seed(0)
    ours = derived["LearnedPositions"](6, 5)
    theirs = attnlib.LearnedPositionalEmbedding(6, 5, beyond="clamp")
    theirs.load_state_dict(ours.state_dict())
    for length in (0, 1, 6, 15):
        torch.testing.assert_close(ours(length), theirs(length))
    ours(15).pow(2).sum().backward()
    theirs(15).pow(2).sum().backward()
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)  # the clamped rows train row 5 in both
    assert ours.weight.grad[5].abs().sum() > ours.weight.grad[4].abs().sum()


@pytest.mark.parametrize("shape, offset, base", [((7, 8), 0, 10000.0), ((2, 3, 9, 16), 0, 10000.0),
                                                 ((2, 3, 9, 16), 11, 10000.0), ((4, 5, 2), 3, 100.0)])
def test_rope_derivation_equals_attnlib(derived, shape, offset, base):
    x = torch.randn(*shape)
    torch.testing.assert_close(derived["rope"](x, offset, base), attnlib.apply_rope(x, offset=offset, base=base))


def test_rope_derivation_keeps_norms_and_scores_depend_on_distance_only(derived):
    rope = derived["rope"]
    x = torch.randn(3, 20, 12)
    torch.testing.assert_close(rope(x).norm(dim=-1), x.norm(dim=-1))
    q, k = torch.randn(12), torch.randn(12)
    scores = rope(q.expand(30, 12)) @ rope(k.expand(30, 12)).T  # (30, 30): q at m, k at n
    for shift in (1, 5):
        torch.testing.assert_close(scores[shift:, shift:], scores[:-shift, :-shift], atol=1e-4, rtol=1e-4)
    assert (scores[0] - scores[0, 0]).abs().max() > 1e-2  # other distances, other scores


@pytest.mark.parametrize("heads", [1, 2, 4, 8, 16, 32])
def test_alibi_derivation_equals_attnlib_for_powers_of_two(derived, heads):
    slopes = derived["alibi_slopes_power_of_two"](heads)
    torch.testing.assert_close(slopes, attnlib.alibi_slopes(heads))
    torch.testing.assert_close(derived["alibi_penalty"](slopes, 4, 9), attnlib.alibi_bias(heads, 4, 9))


def test_alibi_derivation_in_attention_equals_multi_head_attention(derived):
    torch.manual_seed(0)
    layer = attnlib.MultiHeadAttention(16, 4, positions="alibi").eval()
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        q, k, v = (attnlib.multi_head.split_heads(t, 4) for t in layer.project(x, x, x))
        penalty = derived["alibi_penalty"](derived["alibi_slopes_power_of_two"](4), 7, 7)
        heads = attnlib.scaled_dot_product_attention(q, k, v, causal=True, bias=penalty)
        torch.testing.assert_close(layer.out_proj(attnlib.multi_head.merge_heads(heads)), layer(x, causal=True))


# ----- 7.1 the shift matrix --------------------------------------------------------------------
def _shift(k, d, dtype=torch.float64):
    omega = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    c, s = (k * omega).cos(), (k * omega).sin()
    M = torch.zeros(d, d, dtype=torch.float64)
    M[0::2, 0::2], M[0::2, 1::2], M[1::2, 0::2], M[1::2, 1::2] = c.diag(), -s.diag(), s.diag(), c.diag()
    return M.to(dtype)


def _least_squares_shift(k, d):
    pe = sinusoidal_encoding(10_000, d).double()  # noqa: F821  (the lesson's derivation, bound by the check)
    rows = torch.arange(100, 9_000, 97)  # away from both ends, so that rows + k exist for negative k too
    return torch.linalg.lstsq(pe[rows], pe[rows + k]).solution


def test_7_1_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson07.shift_matrix, solutions["shift_matrix"], capsys)
    assert_check_passes(lesson07.shift_matrix, _shift, capsys)  # float64 is fine
    assert_check_passes(lesson07.shift_matrix, _least_squares_shift, capsys)  # fitted, with the lesson's encoding


def test_7_1_solution_satisfies_the_property(solutions):
    for k, d in ((1, 8), (-4, 6), (13, 32)):
        M = solutions["shift_matrix"](k, d).double()
        pe = attnlib.sinusoidal_positional_encoding(500, d).double()
        start, end = (pe[:500 - k], pe[k:]) if k >= 0 else (pe[-k:], pe[:500 + k])
        torch.testing.assert_close(start @ M, end, atol=1e-5, rtol=0)


def _halves(k, d):
    M = _shift(k, d)
    order = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])  # [sines | cosines]
    return M[order][:, order]


def _per_feature(k, d):
    omega = 10000.0 ** (-torch.arange(d // 2, dtype=torch.float64) / d)
    c, s = (k * omega).cos(), (k * omega).sin()
    M = torch.zeros(d, d, dtype=torch.float64)
    M[0::2, 0::2], M[0::2, 1::2], M[1::2, 0::2], M[1::2, 1::2] = c.diag(), -s.diag(), s.diag(), c.diag()
    return M


@pytest.mark.parametrize("wrong, fragments", [
    (lambda k, d: _raise(NotImplementedError("x")), ["not attempted yet"]),
    (lambda k, d: None, ["is None"]),
    (lambda k, d: _shift(k, d).T, ["PE(p - k)", "transpose"]),
    (lambda k, d: _shift(-k, d), ["transpose"]),
    (_per_feature, ["wrong frequencies", "10000^(2i / d_model)"]),
    (_halves, ["[all sines | all cosines]", "interleaves"]),
    (lambda k, d: _shift(1, d), ["matrix for k = 1"]),
    (lambda k, d: torch.eye(d) if k != 0 else _shift(k, d), ["is the identity"]),
    (lambda k, d: _shift(k, d) * 1.01, ["does not map PE(p) to PE(p + k)", "angle-addition"]),
    (lambda k, d: torch.zeros(d, d + 1), ["shape (8, 9)", "expected shape (8, 8)"]),
    (lambda k, d: torch.ones(d, d, dtype=torch.long), ["floating-point"]),
    (lambda k, d: torch.full((d, d), float("nan")), ["NaN"]),
    (lambda k, d: _shift(k, d).tolist(), ["a list", "torch.Tensor"]),
    (lambda k, d: _shift(k, d)[:4, :4], ["shape (4, 4)"]),
])
def test_7_1_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson07.shift_matrix, wrong, capsys, *fragments)


# ----- 7.2 RoPE, rotate-half layout ---------------------------------------------------------------
def _to_pairs(x):
    """(…, d) rotate-half layout -> interleaved: feature i and i + d/2 side by side."""
    d = x.shape[-1]
    return torch.stack([x[..., : d // 2], x[..., d // 2 :]], dim=-1).flatten(-2)


def _from_pairs(x):
    return torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)


def _by_complex_numbers(x, base=10000.0):
    T, d = x.shape[-2], x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turn = torch.polar(torch.ones(T, d // 2, dtype=torch.float64), torch.arange(T, dtype=torch.float64)[:, None] * theta)
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2 :].double()) * turn
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


def test_7_2_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson07.rope_rotate_half, solutions["rope_rotate_half"], capsys)
    assert_check_passes(lesson07.rope_rotate_half, _by_complex_numbers, capsys)
    assert_check_passes(lesson07.rope_rotate_half,
                        lambda x, base=10000.0: _from_pairs(attnlib.apply_rope(_to_pairs(x), base=base)), capsys)


def test_7_2_an_answer_that_calls_the_lessons_rope_passes_with_a_stand_in(capsys):
    def rope_rotate_half(x, base=10000.0):
        return _from_pairs(rope(_to_pairs(x), 0, base))  # noqa: F821  (the lesson's derivation)

    lesson07.rope_rotate_half.check(rope_rotate_half)
    out = capsys.readouterr().out
    assert out.startswith("✓ Exercise 7.2") and "rope standing in" in out


def _turn(x, base=10000.0, sign=1.0, start=0, per_feature=False):
    T, d = x.shape[-2], x.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float64)
    theta = base ** (-(i if per_feature else 2 * i) / d)
    angle = sign * torch.arange(start, start + T, dtype=torch.float64)[:, None] * theta
    a, b = x[..., : d // 2].double(), x[..., d // 2 :].double()
    return torch.cat([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], dim=-1).to(x.dtype)


@pytest.mark.parametrize("wrong, fragments", [
    (lambda x, base=10000.0: _raise(NotImplementedError("x")), ["not attempted yet"]),
    (lambda x, base=10000.0: None, ["is None"]),
    (lambda x, base=10000.0: attnlib.apply_rope(x, base=base), ["adjacent features", "i + d/2"]),
    (lambda x, base=10000.0: _turn(x, base, sign=-1.0), ["wrong way"]),
    (lambda x, base=10000.0: _turn(x, base, start=1), ["from 1", "position 0"]),
    (lambda x, base=10000.0: _turn(x, base, per_feature=True), ["wrong frequencies"]),
    (lambda x, base=10000.0: _turn(x.transpose(1, 2), base).transpose(1, 2), ["heads axis"]),
    (lambda x, base=10000.0: _turn(x, base) * 1.1, ["changes the lengths"]),
    (lambda x, base=10000.0: _turn(x, 10000.0), ["wrong values"]),  # ignores base: the second input uses 100
    (lambda x, base=10000.0: _turn(x, base).double(), ["dtype torch.float64", "keep the input's dtype"]),
    (lambda x, base=10000.0: _turn(x, base)[..., :-1], ["shape (2, 3, 5, 7)"]),
    (lambda x, base=10000.0: _turn(x, base).numpy(), ["ndarray", "torch.Tensor"]),
    (lambda x, base=10000.0: x.reshape(-1, 8).sum() + "x", ["raised an exception"]),
])
def test_7_2_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson07.rope_rotate_half, wrong, capsys, *fragments)


# ----- 7.3 ALiBi's slopes for any number of heads ---------------------------------------------------
def _slopes_by_loop(num_heads):
    below = 1
    while below * 2 <= num_heads:
        below *= 2
    slopes = [2 ** (-8 * h / below) for h in range(1, below + 1)]
    h = 1
    while len(slopes) < num_heads:
        slopes.append(2 ** (-8 * h / (2 * below)))
        h += 2
    return torch.tensor(slopes, dtype=torch.float32)


def test_7_3_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson07.alibi_slopes, solutions["alibi_slopes"], capsys)
    assert_check_passes(lesson07.alibi_slopes, _slopes_by_loop, capsys)
    assert_check_passes(lesson07.alibi_slopes, attnlib.alibi_slopes, capsys)


def test_7_3_an_answer_that_calls_the_lessons_power_of_two_slopes_passes(capsys):
    def alibi_slopes(num_heads):
        below = 2 ** math.floor(math.log2(num_heads))
        return torch.cat([alibi_slopes_power_of_two(below),  # noqa: F821  (the lesson's derivation)
                          alibi_slopes_power_of_two(2 * below)[0::2][: num_heads - below]])  # noqa: F821

    lesson07.alibi_slopes.check(alibi_slopes)
    assert capsys.readouterr().out.startswith("✓ Exercise 7.3")


def _geometric(n, first=1):
    return torch.tensor([2.0 ** (-8.0 * h / n) for h in range(first, first + n)])


def _with_extras(n, extras):
    below = 2 ** math.floor(math.log2(n))
    return torch.cat([_geometric(below), _geometric(2 * below)[extras][: n - below]])


@pytest.mark.parametrize("wrong, fragments", [
    (lambda n: _raise(NotImplementedError("x")), ["not attempted yet"]),
    (lambda n: None, ["is None"]),
    (lambda n: _geometric(n, first=0), ["h = 0", "from 1"]),
    (lambda n: _geometric(n), ["alibi_slopes(3)", "not a power of two"]),
    (lambda n: _with_extras(n, slice(1, None, 2)), ["repeats slopes"]),
    (lambda n: _geometric(2 ** math.ceil(math.log2(n)))[:n], ["next power"]),
    (lambda n: _with_extras(n, slice(0, None, 2)).sort().values, ["another order"]),
    (lambda n: _with_extras(n, slice(0, None, 2)).double(), ["dtype torch.float64", "float32"]),
    (lambda n: _with_extras(n, slice(0, None, 2)).tolist(), ["a list"]),
    (lambda n: _with_extras(n, slice(0, None, 2))[:-1] if n > 1 else _with_extras(n, slice(0, None, 2)),
     ["alibi_slopes(2) has shape (1,)"]),
    (lambda n: _with_extras(n, slice(0, None, 2)) * (1.1 if n == 5 else 1.0), ["alibi_slopes(5) is off", "head 4 gets slope 0.55", "gives 0.5"]),
])
def test_7_3_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson07.alibi_slopes, wrong, capsys, *fragments)


# ----- hints and speed -------------------------------------------------------------------------
EXERCISES = (lesson07.shift_matrix, lesson07.rope_rotate_half, lesson07.alibi_slopes)
NAMES = {"7.1": "shift_matrix", "7.2": "rope_rotate_half", "7.3": "alibi_slopes"}


@pytest.mark.parametrize("exercise", EXERCISES)
def test_hints_come_in_order_and_the_last_repeats(exercise, capsys):
    assert_hints_build_up(exercise, capsys)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_the_last_hint_shows_a_key_line_not_the_whole_solution(exercise):
    assert not gives_whole_solution(exercise.hints[-1], NOTEBOOK, NAMES[exercise.number])


@pytest.mark.parametrize("exercise, signature", [
    (lesson07.shift_matrix, "def f(k, d_model):\n    M = torch.zeros(d_model, d_model); i, c, s = 0, 1.0, 0.0"),
    (lesson07.rope_rotate_half, "def f(x, base=10000.0):\n    a, b = x, x; cos = sin = torch.ones(1)"),
    (lesson07.alibi_slopes, "def f(num_heads):\n    power_of_two = lambda n: [1.0] * n; below = 1"),
])
def test_the_last_hint_alone_does_not_pass(exercise, signature, capsys):
    assert_last_hint_alone_fails(exercise, signature, capsys)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_checks_are_fast_and_leave_the_random_stream_alone(exercise, solutions, capsys):
    assert_check_is_quick_and_leaves_the_random_stream_alone(exercise, solutions[NAMES[exercise.number]], capsys)
