"""Lesson 08: its derivations equal nn.LayerNorm, attnlib's and torch's layers; its exercise checkers judge fairly."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnlib
from attnlib.exercises import lesson08
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

NOTEBOOK = "08_transformer_block.ipynb"
D, H, FF = 16, 4, 48


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


def _shaken(module, seed=0):
    """``module`` in eval mode with every parameter moved off its initial value (non-zero biases, gains ≠ 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return module.eval()


# ----- derivations ---------------------------------------------------------------------------
def test_derivation_cells_define_the_parts_and_the_layers(derived):
    for name in ("layer_norm", "feed_forward", "dropout", "residual", "attention", "encoder_layer", "decoder_layer"):
        assert callable(derived.get(name)), name
    assert "rms_norm" not in derived  # the learner writes it (exercise 8.1)


@pytest.mark.parametrize("shape", [(8,), (3, 8), (2, 5, 8), (2, 3, 4, 8)])
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_layer_norm_equals_nn_layer_norm(derived, shape, eps):
    norm = _shaken(nn.LayerNorm(8, eps=eps))
    x = 3.0 + 2.0 * torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(derived["layer_norm"](x, norm.weight, norm.bias, eps=eps), norm(x))
        no_bias = _shaken(nn.LayerNorm(8, eps=eps, bias=False))
        torch.testing.assert_close(derived["layer_norm"](x, no_bias.weight, None, eps=eps), no_bias(x))
        x64 = x.double()
        torch.testing.assert_close(derived["layer_norm"](x64, norm.weight.double(), norm.bias.double(), eps=eps),
                                   F.layer_norm(x64, (8,), norm.weight.double(), norm.bias.double(), eps))


def test_layer_norm_of_a_constant_token_is_its_bias_not_nan(derived):
    weight, bias = torch.randn(6), torch.randn(6)
    out = derived["layer_norm"](torch.full((2, 6), 3.0), weight, bias)
    torch.testing.assert_close(out, bias.expand(2, 6))


@pytest.mark.parametrize("activation", [F.relu, F.gelu])
def test_feed_forward_equals_the_layers_network(derived, activation):
    name = "relu" if activation is F.relu else "gelu"
    layer = _shaken(attnlib.EncoderLayer(D, H, FF, activation=name))
    x = torch.randn(3, 5, D)
    parts = (layer.linear1.weight, layer.linear1.bias, layer.linear2.weight, layer.linear2.bias)
    with torch.no_grad():
        torch.testing.assert_close(derived["feed_forward"](x, *parts, activation=activation), layer.feed_forward(x))


def test_dropout_keeps_the_expectation_and_is_the_identity_in_eval(derived):
    torch.manual_seed(0)
    x = torch.full((100_000,), 2.0)
    for p in (0.1, 0.5):
        out = derived["dropout"](x, p, training=True)
        assert abs((out == 0).float().mean().item() - p) < 0.01
        torch.testing.assert_close(out[out != 0], torch.full_like(out[out != 0], 2.0 / (1 - p)))
        assert abs(out.mean().item() - 2.0) < 0.03
    assert derived["dropout"](x, 0.3, training=False) is x
    assert derived["dropout"](x, 0.0, training=True) is x


def test_residual_block_adds_in_pre_norm_and_normalises_in_post_norm(derived):
    norm = _shaken(nn.LayerNorm(D))
    x = 4.0 + 2.0 * torch.randn(2, 3, D)
    f = nn.Linear(D, D)
    with torch.no_grad():
        torch.testing.assert_close(derived["residual"](x, f, norm, norm_first=True), x + f(norm(x)))
        torch.testing.assert_close(derived["residual"](x, f, norm, norm_first=False), norm(x + f(x)))
        doubled = derived["residual"](x, f, norm, norm_first=True, drop=lambda y: 2 * y)
        torch.testing.assert_close(doubled, x + 2 * f(norm(x)))


@pytest.mark.parametrize("norm_first", [False, True])
def test_derived_encoder_layer_equals_attnlib_and_torch(derived, norm_first):
    torch.manual_seed(0)
    theirs = _shaken(nn.TransformerEncoderLayer(D, H, FF, batch_first=True, norm_first=norm_first))
    ours = attnlib.EncoderLayer(D, H, FF, norm_first=norm_first).eval()
    ours.load_state_dict(theirs.state_dict())
    weights = dict(theirs.state_dict())
    x = torch.randn(3, 6, D, generator=torch.Generator().manual_seed(1))
    real = torch.arange(6)[None, :] < torch.tensor([6, 4, 1])[:, None]  # (B, L)
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    layer = derived["encoder_layer"]
    with torch.no_grad():
        got = layer(x, weights, H, norm_first=norm_first)
        torch.testing.assert_close(got, ours(x))
        torch.testing.assert_close(got, theirs(x))
        got = layer(x, weights, H, norm_first=norm_first, mask=real[:, None, None, :])
        torch.testing.assert_close(got, ours(x, mask=real[:, None, None, :]))
        torch.testing.assert_close(got[real], theirs(x, src_key_padding_mask=~real)[real])
        got = layer(x, weights, H, norm_first=norm_first, causal=True)
        torch.testing.assert_close(got, ours(x, causal=True))
        torch.testing.assert_close(got, theirs(x, src_mask=future, is_causal=True))
        both = layer(x, weights, H, norm_first=norm_first, mask=real[:, None, None, :], causal=True)
        torch.testing.assert_close(both, ours(x, mask=real[:, None, None, :], causal=True))


@pytest.mark.parametrize("norm_first", [False, True])
def test_derived_decoder_layer_equals_attnlib_and_torch(derived, norm_first):
    torch.manual_seed(0)
    theirs = _shaken(nn.TransformerDecoderLayer(D, H, FF, batch_first=True, norm_first=norm_first))
    ours = attnlib.DecoderLayer(D, H, FF, norm_first=norm_first).eval()
    ours.load_state_dict(theirs.state_dict())
    weights = dict(theirs.state_dict())
    g = torch.Generator().manual_seed(2)
    target, memory = torch.randn(3, 5, D, generator=g), torch.randn(3, 7, D, generator=g)
    source_real = torch.arange(7)[None, :] < torch.tensor([7, 3, 5])[:, None]  # (B, S)
    target_real = torch.arange(5)[None, :] < torch.tensor([5, 5, 2])[:, None]  # (B, T)
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)
    with torch.no_grad():
        got = derived["decoder_layer"](target, memory, weights, H, norm_first=norm_first,
                                       mask=target_real[:, None, None, :], memory_mask=source_real[:, None, None, :])
        torch.testing.assert_close(got, ours(target, memory, mask=target_real[:, None, None, :],
                                             memory_mask=source_real[:, None, None, :]))
        expected = theirs(target, memory, tgt_mask=future, tgt_is_causal=True, tgt_key_padding_mask=~target_real,
                          memory_key_padding_mask=~source_real)
        torch.testing.assert_close(got, expected)


def test_derived_encoder_layer_has_the_gradients_of_torchs(derived):
    torch.manual_seed(3)
    theirs = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=True)
    weights = {name: p.detach().clone().requires_grad_() for name, p in theirs.named_parameters()}
    x = torch.randn(2, 4, D)
    derived["encoder_layer"](x, weights, H, norm_first=True).square().sum().backward()
    theirs(x).square().sum().backward()
    for name, p in theirs.named_parameters():
        torch.testing.assert_close(weights[name].grad, p.grad, msg=name)


# ----- 8.1 RMSNorm -----------------------------------------------------------------------------
def test_8_1_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson08.rms_norm, solutions["rms_norm"], capsys)
    assert_check_passes(lesson08.rms_norm, lambda x, w, eps: F.rms_norm(x, (x.shape[-1],), w, eps), capsys)
    assert_check_passes(lesson08.rms_norm,
                        lambda x, w, eps: w * x / (x.pow(2).sum(-1, keepdim=True) / x.shape[-1] + eps).sqrt(), capsys)


def test_8_1_solution_equals_nn_rms_norm(solutions):
    norm = _shaken(nn.RMSNorm(8, eps=1e-6))
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        torch.testing.assert_close(solutions["rms_norm"](x, norm.weight, 1e-6), norm(x))


def _ms(x):
    return x.square().mean(dim=-1, keepdim=True)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda x, w, eps: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda x, w, eps: None, ["is None"]),
        (lambda x, w, eps: F.layer_norm(x, (x.shape[-1],), w, None, eps), ["subtracts the mean", "layer normalisation"]),
        (lambda x, w, eps: x / (_ms(x).sqrt() + eps) * w, ["eps outside the square root"]),
        (lambda x, w, eps: x / torch.sqrt(_ms(x) + eps), ["forgets the gain"]),
        (lambda x, w, eps: x / (_ms(x) + eps) * w, ["divides by the mean square"]),
        (lambda x, w, eps: x / torch.sqrt(x.square().sum(-1, keepdim=True) + eps) * w, ["*sum* of squares"]),
        (lambda x, w, eps: x / torch.sqrt(x.var(-1, keepdim=True) + eps) * w, ["standard deviation"]),
        (lambda x, w, eps: x / torch.sqrt(x.square().mean(0, keepdim=True) + eps) * w, ["first dimension", "dim=-1"]),
        (lambda x, w, eps: x / torch.sqrt(x.square().mean() + eps) * w, ["whole tensor"]),
        (lambda x, w, eps: x / torch.sqrt(x.square().mean(-1) + eps) * w, ["raised an exception"]),  # keepdim missing
        (lambda x, w, eps: (x / torch.sqrt(_ms(x) + eps) * w).mean(-1), ["has shape", "keeps the shape"]),
        (lambda x, w, eps: (x / torch.sqrt(_ms(x) + eps) * w).float() if x.dtype == torch.float64 else
         x / torch.sqrt(_ms(x) + eps) * w, ["float64", "dtype"]),
        (lambda x, w, eps: (x / torch.sqrt(_ms(x) + eps) * w).numpy(), ["numpy array"]),
        (lambda x, w, eps: 1.01 * x / torch.sqrt(_ms(x) + eps) * w, ["wrong values"]),
    ],
)
def test_8_1_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson08.rms_norm, wrong, capsys, *fragments)


# ----- 8.2 decoder layer parameters ------------------------------------------------------------
def _count(d, ff, b):
    return 2 * (4 * d * d + 4 * d * b) + 2 * d * ff + (ff + d) * b + 3 * (d + d * b)


def test_8_2_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson08.decoder_layer_parameter_count, solutions["decoder_layer_parameter_count"], capsys)
    assert_check_passes(lesson08.decoder_layer_parameter_count,
                        lambda d, h, ff, bias: 8 * d * d + 2 * d * ff + 3 * d + (12 * d + ff if bias else 0), capsys)
    assert_check_passes(lesson08.decoder_layer_parameter_count,
                        lambda d, h, ff, bias: np.int64(_count(d, ff, int(bias))), capsys)
    assert_check_passes(lesson08.decoder_layer_parameter_count,
                        lambda d, h, ff, bias: sum(p.numel() for p in attnlib.DecoderLayer(
                            d, h, ff, bias=bias).parameters()), capsys)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda d, h, ff, bias: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda d, h, ff, bias: None, ["is None"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) - (4 * d * d + 4 * d * bias) - (d + d * bias),
         ["an encoder layer's count", "cross-attention"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) - (4 * d * d + 4 * d * bias),
         ["has one attention", "cross-attention"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) - (d + d * bias), ["counts two LayerNorms", "three"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) - 3 * (d + d * bias), ["forgets the LayerNorms"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) - (0 if bias else 3 * d), ["bias=False", "never their gains"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) + 3 * d * (1 - bias), ["gives the LayerNorms a bias"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) - (ff + d) * bias, ["forgets the feed-forward network's biases"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) - (ff - d) * bias, ["gives b_1 d_model entries"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) - d * ff, ["counts one matrix of the feed-forward"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) - 2 * (d * d + d * bias), ["output projections W_O"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) + (h - 1) * 2 * (4 * d * d + 4 * d * bias),
         ["number of heads"]),
        (lambda d, h, ff, bias: _count(d, ff, bias) + 5, ["off by +5", "three LayerNorms"]),
        (lambda d, h, ff, bias: str(_count(d, ff, bias)), ["a str", "int"]),
    ],
)
def test_8_2_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson08.decoder_layer_parameter_count, wrong, capsys, *fragments)


# ----- 8.3 predict which run stalls ------------------------------------------------------------
def test_8_3_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson08.predict_stalls, solutions["predict_stalls"], capsys)
    assert_check_passes(lesson08.predict_stalls,
                        lambda: {"d": " Train", "c": "TRAINS", "b": "stall", "a": "trains"}, capsys)


@pytest.mark.parametrize(
    "answer, fragments",
    [
        (None, ["returned None"]),
        (["B"], ["a list", "one entry per run"]),
        ({"A": "trains", "B": "stalls", "C": "trains"}, ["missing ['D']"]),
        ({"A": "trains", "B": "stalls", "C": "trains", "D": "trains", "E": "trains"}, ["unknown ['E']"]),
        ({"A": "trains", "B": True, "C": "trains", "D": "trains"}, ["run B is a bool"]),
        ({"A": "trains", "B": "diverges", "C": "trains", "D": "trains"}, ["'diverges'", '"stalls"']),
        ({"A": "stalls", "B": "stalls", "C": "stalls", "D": "stalls"}, ["every run stalls"]),
        ({"A": "stalls", "B": "stalls", "C": "trains", "D": "trains"}, ["1 of the four", "warm-up keeps"]),
        ({"A": "trains", "B": "trains", "C": "trains", "D": "trains"}, ["full-size Adam steps from step 1"]),
        ({"A": "trains", "B": "stalls", "C": "stalls", "D": "trains"}, ["run C is pre-norm"]),
        ({"A": "trains", "B": "stalls", "C": "trains", "D": "stalls"}, ["10× smaller rate"]),
        ({"A": "stalls", "B": "trains", "C": "stalls", "D": "stalls"}, ["4 of the four"]),
    ],
)
def test_8_3_mistakes_are_explained(answer, fragments, capsys):
    assert_check_fails(lesson08.predict_stalls, lambda: answer, capsys, *fragments)


def test_8_3_stub_is_not_attempted(capsys):
    def stub():
        raise NotImplementedError("Exercise 8.3: replace this line with your solution")

    assert_check_fails(lesson08.predict_stalls, stub, capsys, "not attempted yet")


# ----- hints and speed -------------------------------------------------------------------------
EXERCISES = (lesson08.rms_norm, lesson08.decoder_layer_parameter_count, lesson08.predict_stalls)
NAMES = {"8.1": "rms_norm", "8.2": "decoder_layer_parameter_count", "8.3": "predict_stalls"}


@pytest.mark.parametrize("exercise", EXERCISES)
def test_hints_come_in_order_and_the_last_repeats(exercise, capsys):
    assert_hints_build_up(exercise, capsys)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_the_last_hint_does_not_give_the_whole_solution(exercise):
    assert not gives_whole_solution(exercise.hints[-1], NOTEBOOK, NAMES[exercise.number])


@pytest.mark.parametrize("exercise, signature", [
    (lesson08.rms_norm, "def f(x, weight, eps):"),
    (lesson08.decoder_layer_parameter_count, "def f(d_model, num_heads, d_ff, bias):"),
])
def test_the_last_hint_alone_does_not_pass(exercise, signature, capsys):
    assert_last_hint_alone_fails(exercise, signature, capsys)


def test_the_prediction_checker_agrees_with_the_lessons_runs():
    """The runs that exercise 8.3 describes are the ones section 7 trains, with the outcomes it asserts."""
    from tests.notebook_tools import MASTERS, read

    source = "\n".join(c.source for c in read(MASTERS / NOTEBOOK).cells if c.cell_type == "code")
    assert "num_layers, d_model, steps, batch_size, warmup, lr = 6, 32, 220, 32, 100, 1e-2" in source
    assert '"D: post-norm, no warm-up, lr / 10": (False, 0, lr / 10)' in source
    assert lesson08.RUNS["A"].endswith("1e-2") and lesson08.RUNS["D"].endswith("1e-3")


@pytest.mark.parametrize("exercise", EXERCISES)
def test_checks_are_fast_and_leave_the_random_stream_alone(exercise, solutions, capsys):
    assert_check_is_quick_and_leaves_the_random_stream_alone(exercise, solutions[NAMES[exercise.number]], capsys)
