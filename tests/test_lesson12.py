"""Lesson 12: its derivations equal attnlib.vision, and its exercise checkers judge fairly."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnlib
from attnlib.exercises import lesson12
from attnlib.vision import attention_rollout, sinusoidal_2d_positional_encoding
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

NOTEBOOK = "12_vision_transformer.ipynb"


@pytest.fixture(scope="module")
def derived():
    return load_derivations(NOTEBOOK)


@pytest.fixture(scope="module")
def solutions():
    return exercise_solutions(NOTEBOOK)


# ----- derivations ---------------------------------------------------------------------------
def test_derivation_cells_define_the_lessons_functions(derived):
    for name in ("patch_embedding", "positions_2d", "vision_transformer", "rollout"):
        assert callable(derived.get(name)), name
    assert "patchify" not in derived  # the learner writes it (exercise 12.1); the derivations use attnlib's


@pytest.mark.parametrize("channels, patch, d_model, height, width", [(3, 4, 32, 16, 24), (1, 2, 5, 6, 4), (2, 8, 8, 8, 8)])
def test_patch_embedding_equals_attnlib_and_a_strided_conv(derived, channels, patch, d_model, height, width):
    torch.manual_seed(0)
    embed = attnlib.PatchEmbedding(patch, channels, d_model)
    conv = nn.Conv2d(channels, d_model, patch, stride=patch)
    with torch.no_grad():
        conv.weight.copy_(embed.proj.weight.view(d_model, channels, patch, patch))
        conv.bias.copy_(embed.proj.bias)
        x = torch.randn(3, channels, height, width)
        ours = derived["patch_embedding"](x, embed.proj.weight, embed.proj.bias, patch)
        torch.testing.assert_close(ours, embed(x))
        torch.testing.assert_close(ours, conv(x).flatten(2).transpose(1, 2))


@pytest.mark.parametrize("rows, cols, d_model", [(14, 14, 64), (3, 5, 8), (1, 7, 4)])
def test_2d_positions_equal_attnlib(derived, rows, cols, d_model):
    torch.testing.assert_close(derived["positions_2d"](rows, cols, d_model),
                               sinusoidal_2d_positional_encoding(rows, cols, d_model))


@pytest.mark.parametrize("pool, position", [("cls", "learned"), ("mean", "learned"), ("cls", "sinusoidal"),
                                            ("mean", "none")])
def test_derived_forward_pass_equals_the_vision_transformer(derived, pool, position):
    torch.manual_seed(1)
    model = attnlib.VisionTransformer(12, 4, 3, d_model=16, num_heads=2, num_layers=2, d_ff=24, pool=pool,
                                      position=position).eval()
    x = torch.rand(5, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(derived["vision_transformer"](model, x), model(x))


@pytest.mark.parametrize("layers", [1, 3])
def test_derived_rollout_equals_attnlib(derived, layers):
    torch.manual_seed(2)
    weights = [torch.softmax(torch.randn(2, 4, 6, 6), dim=-1) for _ in range(layers)]
    torch.testing.assert_close(derived["rollout"](weights), attention_rollout(weights))


# ----- 12.1 patchify -------------------------------------------------------------------------------
def _unfold(images, p):
    return F.unfold(images, p, stride=p).transpose(1, 2)


def _tensor_unfold(images, p):
    b, c = images.shape[:2]
    windows = images.unfold(2, p, p).unfold(3, p, p)  # (B, C, H/P, W/P, P, P)
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * p * p)


def _grid(x, p):
    b, c, h, w = x.shape
    return x.reshape(b, c, h // p, p, w // p, p)


def test_12_1_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson12.patchify, solutions["patchify"], capsys)
    assert_check_passes(lesson12.patchify, _unfold, capsys)
    assert_check_passes(lesson12.patchify, _tensor_unfold, capsys)
    assert_check_passes(lesson12.patchify, attnlib.vision.patchify, capsys)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda x, p: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda x, p: None, ["is None"]),
        (lambda x, p: F.unfold(x, p, stride=p), ["(B, C·P·P, N)", "transposed"]),
        (lambda x, p: _grid(x, p).permute(0, 2, 4, 1, 3, 5).flatten(3), ["flatten the grid of patches"]),
        (lambda x, p: _grid(x, p).permute(0, 2, 4, 1, 3, 5).flatten(1, 2), ["flatten each patch's (C, P, P)"]),
        (lambda x, p: x.reshape(x.shape[0], -1, x.shape[1] * p * p), ["without reordering the axes"]),
        (lambda x, p: _grid(x, p).permute(0, 2, 4, 3, 5, 1).reshape(x.shape[0], -1, x.shape[1] * p * p),
         ["channel last", "(channel, row, column)"]),
        (lambda x, p: _grid(x, p).permute(0, 4, 2, 1, 3, 5).reshape(x.shape[0], -1, x.shape[1] * p * p),
         ["column by column", "row by row"]),
        (lambda x, p: _grid(x, p).permute(0, 2, 4, 1, 5, 3).reshape(x.shape[0], -1, x.shape[1] * p * p),
         ["swaps the rows and columns inside each patch"]),
        (lambda x, p: _grid(x, p).permute(0, 2, 4, 1, 3, 5).reshape(2, 6, 48), ["raised an exception"]),  # hard-coded
        (lambda x, p: _unfold(x, p).double(), ["dtype torch.float64"]),
        (lambda x, p: _unfold(x, p).numpy(), ["numpy array"]),
        (lambda x, p: _unfold(x, p) * 2, ["wrong values"]),
    ],
)
def test_12_1_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson12.patchify, wrong, capsys, *fragments)


# ----- 12.2 what a per-patch model can answer ------------------------------------------------------
RIGHT = {"any red": True, "both red": True, "same shape": False, "red left of blue": True, "same row": False,
         "exactly one red": False}


def test_12_2_solution_and_an_equivalent_answer_pass(solutions, capsys):
    assert_check_passes(lesson12.per_patch_answers, solutions["per_patch_answers"], capsys)
    assert_check_passes(lesson12.per_patch_answers, lambda: dict(reversed(list(RIGHT.items()))), capsys)


@pytest.mark.parametrize("flipped, fragments", [
    ("any red", ["1 of your 6 answers is wrong", "score each red patch 1"]),
    ("both red", ["above 1.5", "Counting is a sum"]),
    ("same shape", ["it cannot", "score(AA) + score(BB) = score(AB) + score(BA)"]),
    ("red left of blue", ["column(blue) − column(red)"]),
    ("same row", ["rows (r, r), (r', r'), (r, r'), (r', r)"]),
    ("exactly one red", ["RR, BB, RB, BR", "XOR"]),
])
def test_12_2_each_wrong_answer_gets_its_reason(flipped, fragments, capsys):
    answers = {**RIGHT, flipped: not RIGHT[flipped]}
    message = assert_check_fails(lesson12.per_patch_answers, lambda: answers, capsys, *fragments)
    assert lesson12.QUESTIONS[flipped] in message


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda: None, ["returned None"]),
        (lambda: list(RIGHT.values()), ["returned a list", "expected a dict"]),
        (lambda: {k: v for k, v in RIGHT.items() if k != "same row"}, ["missing: ['same row']"]),
        (lambda: {**RIGHT, "same colour": False}, ["not a question: ['same colour']"]),
        (lambda: {**RIGHT, "any red": "yes"}, ["'yes'", "answer True"]),
        (lambda: {**RIGHT, "any red": 1}, ["is 1", "answer True"]),
        (lambda: {k: not v for k, v in RIGHT.items()}, ["6 of your 6 answers are wrong", "5 more answers are wrong"]),
        (lambda: {**RIGHT, "any red": False, "same row": True}, ["2 of your 6", "1 more answer is wrong"]),
    ],
)
def test_12_2_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson12.per_patch_answers, wrong, capsys, *fragments)


# ----- 12.3 parameters of a ViT -----------------------------------------------------------------------
def _count(S, P, C, d, H, n, d_ff, k, *, cls=1, positions=1, norms=1, final=1, attention_bias=1, ffn_bias=1,
           head_bias=1, embed_bias=1, heads=False, tokens=None, layers=None, channels=None):
    N = (S // P) ** 2 if tokens is None else tokens
    channels = C if channels is None else channels
    embed = channels * P * P * d + embed_bias * d
    attention = (H if heads else 1) * 4 * d * d + attention_bias * 4 * d
    layer = attention + 2 * d * d_ff + ffn_bias * (d_ff + d) + norms * 4 * d
    return (embed + cls * d + positions * (N + cls) * d + (n if layers is None else layers) * layer
            + final * 2 * d + d * k + head_bias * k)


def test_12_3_solution_and_equivalent_answers_pass(solutions, capsys):
    assert_check_passes(lesson12.vit_parameter_count, solutions["vit_parameter_count"], capsys)
    assert_check_passes(lesson12.vit_parameter_count, _count, capsys)
    assert_check_passes(lesson12.vit_parameter_count, lambda *a: float(_count(*a)), capsys)


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (lambda *a: (_ for _ in ()).throw(NotImplementedError("x")), ["not attempted yet"]),
        (lambda *a: None, ["is None"]),
        (lambda *a: _count(*a, embed_bias=0), ["short", "patch embedding's bias"]),
        (lambda *a: _count(*a, cls=0), ["2·d_model short", "[CLS] token together with its position"]),
        (lambda *a: _count(*a, positions=0), ["forgets the learned positions"]),
        (lambda *a: _count(*a, tokens=a[0] // a[1]), ["counts image_size / patch_size patches"]),
        (lambda *a: _count(*a, channels=1), ["P·P inputs"]),
        (lambda *a: _count(*a, norms=0, final=0), ["forgets the LayerNorms"]),
        (lambda *a: _count(*a, final=0), ["2·d_model short", "final LayerNorm"]),
        (lambda *a: _count(*a, norms=0), ["4·d_model short per layer", "two LayerNorms inside each layer"]),
        (lambda *a: _count(*a, attention_bias=0), ["4·d_model short per layer", "attention's biases"]),
        (lambda *a: _count(*a, ffn_bias=0), ["feed-forward network's biases"]),
        (lambda *a: _count(*a, head_bias=0), ["head's bias"]),
        (lambda *a: _count(*a, heads=True), ["multiplies the attention weights by the number of heads"]),
        (lambda *a: _count(*a, layers=1), ["one encoder layer"]),
        (lambda *a: _count(*a) + 1, ["off by +1", "in order"]),
        (lambda *a: "86M", ["a str", "int"]),
        (lambda *a: 12.5, ["a float"]),
    ],
)
def test_12_3_mistakes_are_explained(wrong, fragments, capsys):
    assert_check_fails(lesson12.vit_parameter_count, wrong, capsys, *fragments)


# ----- hints and speed ---------------------------------------------------------------------------
EXERCISES = (lesson12.patchify, lesson12.per_patch_answers, lesson12.vit_parameter_count)
NAMES = {"12.1": "patchify", "12.2": "per_patch_answers", "12.3": "vit_parameter_count"}


@pytest.mark.parametrize("exercise", EXERCISES)
def test_hints_come_in_order_and_the_last_repeats(exercise, capsys):
    assert_hints_build_up(exercise, capsys)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_the_last_hint_does_not_give_the_whole_solution(exercise):
    assert not gives_whole_solution(exercise.hints[-1], NOTEBOOK, NAMES[exercise.number])


@pytest.mark.parametrize("exercise, signature", [
    (lesson12.patchify, "def f(images, patch_size):\n    B, C, H, W = images.shape\n    P = patch_size\n    x = images"),
    (lesson12.vit_parameter_count,
     "def f(image_size, patch_size, in_channels, d_model, num_heads, num_layers, d_ff, num_classes):"),
])
def test_the_last_hint_alone_does_not_pass(exercise, signature, capsys):
    assert_last_hint_alone_fails(exercise, signature, capsys)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_checks_are_fast_and_leave_the_random_stream_alone(exercise, solutions, capsys):
    assert_check_is_quick_and_leaves_the_random_stream_alone(exercise, solutions[NAMES[exercise.number]], capsys)
