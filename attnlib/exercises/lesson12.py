"""Exercises of lesson 12 (the Vision Transformer).

12.1 ``patchify``: images (B, C, H, W) -> patches (B, N, C·P·P), written from its shape contract alone.
12.2 ``per_patch_answers``: which questions about two shapes a per-patch model (a sum of one score per
     patch, then a threshold) can answer on every image: a prediction, justified by the four-image test.
12.3 ``vit_parameter_count``: the parameters of a ViT configuration, checked against the real
     ``attnlib.VisionTransformer`` (ViT-B/16 included).

Each checker first looks for the classic mistakes (features in the wrong order, patches numbered
column by column, a forgotten [CLS] token or LayerNorm, a count multiplied by the number of heads) and
names them.
"""

from __future__ import annotations


import torch

from ._core import Exercise, Failure, Trial, close, comparable, whole_number


# ----- 12.1 patchify ---------------------------------------------------------------------------
def _patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)
    return x.reshape(b, (h // p) * (w // p), c * p * p)  # (B, N, C·P·P)


def _patchify_mistakes(x: torch.Tensor, p: int):
    """Wrong answers with the right shape, and what each one does wrong."""
    b, c, h, w = x.shape
    rows, cols, n, f = h // p, w // p, (h // p) * (w // p), c * p * p
    grid = x.reshape(b, c, rows, p, cols, p)  # (B, C, H/P, P, W/P, P)
    return (
        (x.reshape(b, n, f), "reshapes the image straight into (B, N, C·P·P) without reordering the axes, so a "
         "'patch' is a run of consecutive numbers in memory (parts of a pixel row), not a P × P square. Split H and "
         "W into (H/P, P) and (W/P, P), then permute"),
        (grid.permute(0, 2, 4, 3, 5, 1).reshape(b, n, f), "orders each patch's features (row, column, channel), "
         "channel last; the contract orders them (channel, row, column), the layout of a Conv2d weight, "
         "so that one patch's red pixels come first, then its green ones, then its blue ones"),
        (grid.permute(0, 4, 2, 1, 3, 5).reshape(b, n, f), "numbers the patches column by column; number them "
         "row by row (patch i·W/P + j is in patch-row i, patch-column j), as text is read"),
        (grid.permute(0, 2, 4, 1, 5, 3).reshape(b, n, f), "swaps the rows and columns inside each patch: "
         "within a channel, the features go along the patch's first row, then its second row, and so on"),
    )


def _test_patchify(t: Trial, patchify) -> None:
    cases = ((2, 3, 8, 12, 4), (1, 2, 6, 4, 2), (3, 1, 5, 5, 5), (2, 3, 4, 4, 1))
    for b, c, h, w, p in cases:
        x = t.randn(b, c, h, w)  # (B, C, H, W)
        rows, cols = h // p, w // p
        what = f"patchify(images, {p}) for images of shape (B, C, H, W) = {(b, c, h, w)}"
        got = t.call(patchify, x, p, what=what)
        expected = _patchify(x, p)  # (B, N, C·P·P)
        if isinstance(got, torch.Tensor):
            shape = tuple(got.shape)
            if shape == (b, c * p * p, rows * cols) and rows * cols != c * p * p:
                raise Failure(f"{what} has shape {shape}, which is (B, C·P·P, N): the patches are the columns. The "
                              f"contract wants one row per patch, (B, N, C·P·P) = {tuple(expected.shape)}; that is "
                              "F.unfold's layout transposed.")
            if shape in ((b, rows, cols, c * p * p), (b, rows, cols, c, p, p)):
                raise Failure(f"{what} has shape {shape}; flatten the grid of patches into one axis of N = "
                              f"{rows * cols} tokens and each patch into C·P·P = {c * p * p} features.")
            if shape == (b, rows * cols, c, p, p):
                raise Failure(f"{what} has shape {shape}; flatten each patch's (C, P, P) pixels into one vector of "
                              f"C·P·P = {c * p * p} features.")
        if comparable(got, expected) and not close(got, expected):
            for wrong, message in _patchify_mistakes(x, p):
                if close(got, wrong) and not close(wrong, expected):
                    raise Failure(f"{what} {message}.")
        t.expect_tensor(got, expected, what)


patchify = Exercise(
    number="12.1",
    title="patchify",
    test=_test_patchify,
    hints=[
        "Work from the result backwards. Patch (i, j) holds the pixels of rows i·P .. i·P + P - 1 and columns "
        "j·P .. j·P + P - 1. One reshape splits the height into (H/P, P) and the width into (W/P, P): "
        "(B, C, H/P, P, W/P, P), without moving any number.",
        "Then reorder the axes so that the patch's place comes first and its pixels last, in the contract's order: "
        "(B, H/P, W/P, C, P, P). `permute` does that; a final `reshape` flattens (H/P, W/P) into N and (C, P, P) "
        "into C·P·P (reshape, not view: after a permute the memory is no longer in order).",
        "x = x.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)",
    ],
    success="one row per patch, row by row, each patch's pixels in Conv2d's (channel, row, column) order.",
)


# ----- 12.2 what can a per-patch model answer? --------------------------------------------------
QUESTIONS = {
    "any red": "Is at least one of the two shapes red?",
    "both red": "Are both shapes red?",
    "same shape": "Are the two shapes the same shape (two squares, two rings, ...)?",
    "red left of blue": "Is the red shape further left than the blue one? (every image has one red and one blue shape)",
    "same row": "Are the two shapes in the same row of cells?",
    "exactly one red": "Is exactly one of the two shapes red?",
}
_ANSWERS = {"any red": True, "both red": True, "same shape": False, "red left of blue": True, "same row": False,
            "exactly one red": False}
_WHY = {
    "any red": "it can: score each red patch 1 and every other patch 0; the sum is the number of red shapes, and "
               "'at least one' is sum > 0.5",
    "both red": "it can: score each red patch 1, every other 0, and answer yes when the sum is above 1.5. "
                "Counting is a sum; 'both' is a count of two",
    "same shape": "it cannot, for the reason it cannot compare colours: draw shapes A and B as AA, BB, AB, BA "
                  "(same places, same colours). A sum of per-patch scores gives score(AA) + score(BB) = "
                  "score(AB) + score(BA), yet the first two must be above the threshold and the last two below it",
    "red left of blue": "it can: score the red shape's patch −(its column) and the blue shape's +(its column); the "
                        "sum is column(blue) − column(red), above 0 exactly when red is further left. A comparison "
                        "of one number per object is a sum",
    "same row": "it cannot: put the two shapes in rows (r, r), (r', r'), (r, r'), (r', r) at fixed columns. The "
                "scores add up as for the colours: score(r, r) + score(r', r') = score(r, r') + score(r', r), but "
                "yes, yes must be above the threshold and no, no below",
    "exactly one red": "it cannot: with red R and blue B, the answers for RR, BB, RB, BR are no, no, yes, yes, and "
                       "score(RR) + score(BB) = score(RB) + score(BR): the four-image test fails again (this is XOR)",
}


def _test_per_patch_answers(t: Trial, per_patch_answers) -> None:
    got = t.call(per_patch_answers, what="per_patch_answers()")
    if got is None:
        raise Failure("per_patch_answers() returned None. Did your function forget to `return` the dictionary?")
    if not isinstance(got, dict):
        raise Failure(f"per_patch_answers() returned a {type(got).__name__}; expected a dict "
                      "{question: True or False}.")
    missing = [q for q in QUESTIONS if q not in got]
    extra = [q for q in got if q not in QUESTIONS]
    if missing or extra:
        raise Failure("the dict must have exactly the six keys " + ", ".join(repr(q) for q in QUESTIONS)
                      + (f"; missing: {missing}" if missing else "") + (f"; not a question: {extra}" if extra else ""))
    for question, answer in got.items():
        if not isinstance(answer, bool):
            raise Failure(f"the answer to {question!r} is {answer!r}; answer True (a per-patch model can answer it "
                          "on every image) or False (it cannot).")
    wrong = [q for q in QUESTIONS if got[q] != _ANSWERS[q]]
    if wrong:
        first = wrong[0]
        others = f" ({len(wrong) - 1} more answer{'s are' if len(wrong) > 2 else ' is'} wrong too.)" if len(wrong) > 1 else ""
        raise Failure(f"{len(wrong)} of your 6 answers {'are' if len(wrong) > 1 else 'is'} wrong. "
                      f"{QUESTIONS[first]} You said {got[first]}, but {_WHY[first]}.{others}")


per_patch_answers = Exercise(
    number="12.2",
    title="what a per-patch model can answer",
    test=_test_per_patch_answers,
    hints=[
        "Without mixing, the control's answer is a sum: score = g(patch 1) + g(patch 2) + ... with g any "
        "function of one patch and its position, and the answer is yes when score > threshold. For each question, "
        "try to write down such a score.",
        "Counting works (a red patch scores 1: the sum is the number of red shapes), and so does comparing one "
        "number per object, if the objects are told apart by something they carry, such as their colour.",
        "The four-image test rules a question out: if the answers for AA, BB are yes and for AB, BA no, then "
        "score(AA) + score(BB) = score(AB) + score(BA) cannot put two sums above a threshold and two below it.",
    ],
    success="a sum of per-patch scores can count and compare, but not test whether two shapes agree.",
)


# ----- 12.3 parameters of a ViT configuration --------------------------------------------------
def _real_count(image_size, patch_size, in_channels, d_model, num_heads, num_layers, d_ff, num_classes) -> int:
    from ..vision import VisionTransformer

    with torch.device("meta"):  # shapes only: nothing is allocated, and no random numbers are drawn
        model = VisionTransformer(image_size, patch_size, num_classes, in_channels=in_channels, d_model=d_model,
                                  num_heads=num_heads, num_layers=num_layers, d_ff=d_ff)
    return sum(p.numel() for p in model.parameters())


def _count_mistakes(S, P, C, d, H, layers, d_ff, classes):
    """The counts that classic mistakes give, and what each mistake is (some are equal for every config)."""
    n = (S // P) ** 2
    embed, positions = C * P * P * d + d, (n + 1) * d
    attention, ffn, norms = 4 * d * d + 4 * d, 2 * d * d_ff + d_ff + d, 4 * d
    layer = attention + ffn + norms
    total = embed + d + positions + layers * layer + 2 * d + d * classes + classes
    return (
        (total - d, "is d_model short: it forgets one of the three things of that size, the [CLS] token, the "
         "[CLS] token's own learned position (there are N + 1 positions), or the patch embedding's bias"),
        (total - 2 * d, "is 2·d_model short: it forgets the final LayerNorm before the head (a weight and a bias), "
         "or the [CLS] token together with its position"),
        (total - positions, "forgets the learned positions, one d_model vector per token"),
        (total - positions + (S // P + 1) * d, "counts image_size / patch_size patches; the grid is "
         "(image_size / patch_size) × (image_size / patch_size)"),
        (total - embed + P * P * d + d, "gives the patch embedding P·P inputs; each patch has C·P·P numbers"),
        (total - layers * norms - 2 * d, "forgets the LayerNorms (a weight and a bias of d_model each: two per "
         "layer and a final one)"),
        (total - layers * 4 * d, "is 4·d_model short per layer: it forgets the attention's biases (W_Q, W_K, "
         "W_V, W_O have one each), or the two LayerNorms inside each layer"),
        (total - layers * (d_ff + d), "forgets the feed-forward network's biases"),
        (total - classes, "forgets the head's bias"),
        (total + layers * (H - 1) * (4 * d * d), "multiplies the attention weights by the number of heads; the "
         "heads share the four d_model × d_model projections, each owning a slice of their outputs"),
        (total - layers * layer + layer, "counts one encoder layer, not num_layers of them"),
    )


def _test_vit_parameter_count(t: Trial, vit_parameter_count) -> None:
    configs = ((32, 4, 3, 64, 4, 2, 256, 10), (28, 7, 1, 16, 2, 1, 32, 10), (16, 4, 3, 32, 4, 2, 64, 2),
               (48, 8, 2, 24, 3, 3, 40, 7), (224, 16, 3, 768, 12, 12, 3072, 1000))
    answers, wrong_at = [], None
    for config in configs:
        S, P, C, d, H, layers, d_ff, classes = config
        what = (f"vit_parameter_count(image_size={S}, patch_size={P}, in_channels={C}, d_model={d}, num_heads={H}, "
                f"num_layers={layers}, d_ff={d_ff}, num_classes={classes})")
        got = whole_number(t.call(vit_parameter_count, *config, what="vit_parameter_count"), what)
        answers.append(got)
        if wrong_at is None and got != _real_count(*config):
            wrong_at = (what, got, _real_count(*config))
    if wrong_at is None:
        return
    what, got, expected = wrong_at
    mistakes = list(zip(*(_count_mistakes(*config) for config in configs)))  # per mistake: one entry per config
    for per_config in mistakes:
        message = per_config[0][1]
        if all(answer == wrong for answer, (wrong, _) in zip(answers, per_config)):
            raise Failure(f"{what} is {got:,}: your count {message}.")
    raise Failure(f"{what} is {got:,}, which is off by {got - expected:+,} from the real module's count. Go "
                  "through the model in order: patch embedding, [CLS], positions, each layer, final norm, head.")


vit_parameter_count = Exercise(
    number="12.3",
    title="parameters of a ViT",
    test=_test_vit_parameter_count,
    hints=[
        "Go through the model in order: the patch embedding (a Linear from C·P·P numbers to d_model, with a bias), "
        "the [CLS] token (d_model numbers), one learned position per token (N + 1 tokens, N = (image_size / "
        "patch_size)²), num_layers encoder layers, the final LayerNorm and the head (Linear d_model → num_classes).",
        "One pre-norm encoder layer holds attention, 4·d² + 4·d (lesson 06: whatever the number of heads), the "
        "feed-forward network, d·d_ff + d_ff + d_ff·d + d, and two LayerNorms of 2·d each (a weight and a bias).",
        "layer = (4 * d_model**2 + 4 * d_model) + (2 * d_model * d_ff + d_ff + d_model) + 2 * (2 * d_model)",
    ],
    success="the count of the real module, ViT-B/16's 86.6 million included; the heads did not enter it.",
)
