"""Exercises of lesson 08 (the Transformer block).

8.1 ``rms_norm``: RMSNorm, layer normalisation without the mean, written from its contract for any shape.
8.2 ``decoder_layer_parameter_count``: the parameters of ``torch.nn.TransformerDecoderLayer``, checked
    against the real module, with and without biases.
8.3 ``predict_stalls``: which of four training runs (norm placement, warm-up, learning rate) stalls.

Each checker first looks for the classic mistakes (a mean subtracted, eps outside the square root, the
wrong axis; a count that forgets the cross-attention or a norm; a run misjudged) and names them.
"""

from __future__ import annotations

import torch
from torch import nn

from ._core import Exercise, Failure, Trial, close, comparable, whole_number


# ----- 8.1 RMSNorm -----------------------------------------------------------------------------
def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    mean_square = x.square().mean(dim=-1, keepdim=True)  # (..., 1)
    return x / torch.sqrt(mean_square + eps) * weight  # (..., d)


def _rms_mistakes(x: torch.Tensor, weight: torch.Tensor, eps: float):
    """(wrong result, what it does) for the classic slips, computed in float64."""
    x, weight = x.double(), weight.double()
    centred = x - x.mean(dim=-1, keepdim=True)  # (..., d)
    mean_square = x.square().mean(dim=-1, keepdim=True)  # (..., 1)
    mistakes = [
        (centred / torch.sqrt(centred.square().mean(dim=-1, keepdim=True) + eps) * weight,
         "subtracts the mean first: that is layer normalisation. RMSNorm only rescales; it never shifts"),
        (x / (torch.sqrt(mean_square) + eps) * weight, "adds eps outside the square root; the contract puts "
         "it inside: sqrt(mean(x²) + eps)"),
        (x / torch.sqrt(mean_square + eps), "forgets the gain: multiply by `weight` at the end"),
        (x / (mean_square + eps) * weight, "divides by the mean square; take its square root (the *root* "
         "mean square)"),
        (x / torch.sqrt(x.square().sum(dim=-1, keepdim=True) + eps) * weight, "divides by the root of the "
         "*sum* of squares (the vector's length); RMS is the root of the *mean* of squares"),
        (x / torch.sqrt(x.var(dim=-1, keepdim=True) + eps) * weight, "divides by the standard deviation "
         "(x.var subtracts the mean, and divides by d - 1); RMS uses the raw squares, mean(x²)"),
    ]
    if x.dim() >= 2 and x.shape[0] > 1:
        mistakes.append((x / torch.sqrt(x.square().mean(dim=0, keepdim=True) + eps) * weight,
                         "averages over the first dimension; the mean must run over the features, the last "
                         "dimension (dim=-1), so that every token is normalised on its own"))
        mistakes.append((x / torch.sqrt(x.square().mean() + eps) * weight,
                         "averages over the whole tensor; every token (every row along the last dimension) "
                         "gets its own mean square: mean(dim=-1, keepdim=True)"))
    return mistakes


def _test_rms_norm(t: Trial, rms_norm) -> None:
    cases = (
        ((3, 5, 8), 1e-5, 1.0),  # (B, L, d)
        ((7,), 1e-6, 1.0),  # one vector
        ((2, 3, 4, 6), 1e-5, 1.0),  # (B, H, L, d): any number of leading dimensions
        ((4, 6), 0.5, 0.3),  # small inputs and a large eps: where eps sits matters
    )
    for shape, eps, scale in cases:
        x = scale * t.randn(*shape) + 0.7  # (..., d), not centred: subtracting the mean must show
        weight = 1.0 + 0.5 * t.randn(shape[-1])  # (d,)
        what = f"rms_norm(x, weight, eps={eps}) for x of shape {shape}"
        got = t.call(rms_norm, x, weight, eps, what="rms_norm(x, weight, eps)")
        expected = _rms(x, weight, eps)  # (..., d)
        if comparable(got, expected) and not close(got, expected):
            for wrong, message in _rms_mistakes(x, weight, eps):
                if close(got, wrong.float()):
                    raise Failure(f"{what} {message}.")
        if isinstance(got, torch.Tensor) and tuple(got.shape) != shape:
            raise Failure(f"{what} has shape {tuple(got.shape)}; expected {shape}: normalising rescales each "
                          "token, it keeps the shape (keepdim=True keeps the mean square broadcastable).")
        t.expect_tensor(got, expected, what)

    x = t.randn(2, 3, 5, dtype=torch.float64)  # (B, L, d) in float64
    weight = torch.ones(5, dtype=torch.float64)  # (d,)
    got = t.call(rms_norm, x, weight, 1e-6, what="rms_norm(x, weight, eps)")
    t.expect_tensor(got, _rms(x, weight, 1e-6), "rms_norm of a float64 x (keep the input's dtype)")
    rescaled = t.call(rms_norm, 10.0 * x, weight, 0.0, what="rms_norm(x, weight, eps)")
    t.expect(comparable(rescaled, x) and close(rescaled, _rms(x, weight, 0.0)),
             "with eps=0, rms_norm(10·x) must equal rms_norm(x): the whole point is to undo the scale of x.")


rms_norm = Exercise(
    number="8.1",
    title="RMSNorm",
    test=_test_rms_norm,
    hints=[
        "Start from layer normalisation and remove the centring: no mean is subtracted and there is no bias. "
        "What is left divides each token's features by their root mean square and multiplies by the gain.",
        "The mean runs over the features, the last dimension, and must stay broadcastable against x: "
        "`x.square().mean(dim=-1, keepdim=True)` has shape (..., 1). eps goes inside the square root.",
        "mean_square = x.square().mean(dim=-1, keepdim=True)  # (..., 1): one per token, over its features",
    ],
    success="RMSNorm for any shape: each token rescaled to unit root mean square, then the gain.",
)


# ----- 8.2 parameters of a decoder layer -------------------------------------------------------
def _decoder_count(d_model: int, num_heads: int, d_ff: int, bias: bool) -> int:
    layer = nn.TransformerDecoderLayer(d_model, num_heads, d_ff, bias=bias, batch_first=True, device="meta")
    return sum(p.numel() for p in layer.parameters())


def _test_decoder_count(t: Trial, decoder_layer_parameter_count) -> None:
    configs = ((16, 4, 40, True), (16, 4, 40, False), (512, 8, 2048, True), (64, 2, 100, False),
               (96, 3, 384, True), (768, 12, 3072, False))
    for d, H, ff, bias in configs:
        what = f"decoder_layer_parameter_count(d_model={d}, num_heads={H}, d_ff={ff}, bias={bias})"
        got = whole_number(t.call(decoder_layer_parameter_count, d, H, ff, bias,
                             what="decoder_layer_parameter_count"), what)
        expected = _decoder_count(d, H, ff, bias)
        if got == expected:
            continue
        b = 1 if bias else 0
        attention = 4 * d * d + 4 * d * b  # one multi-head attention: W_Q, W_K, W_V, W_O (+ 4 biases)
        ffn = 2 * d * ff + (ff + d) * b  # W_1, W_2 (+ b_1, b_2)
        norm = d + d * b  # gain (+ bias)
        mistakes = (
            (attention + ffn + 2 * norm, "is an encoder layer's count (one attention, two LayerNorms); a decoder "
             "layer adds cross-attention to the encoder's memory, with its own weights and its own LayerNorm"),
            (attention + ffn + 3 * norm, "has one attention; a decoder layer has two: causal self-attention "
             "over the target and cross-attention to the encoder's memory, each with its own weights"),
            (2 * attention + ffn + 2 * norm, "counts two LayerNorms; a decoder layer has three sublayers, and "
             "each has its own LayerNorm"),
            (2 * attention + ffn, "forgets the LayerNorms: each of the three has a gain of d_model entries "
             "(and a bias of d_model when bias=True); bias=False removes their biases, never their gains"),
            (2 * attention + ffn + 3 * 2 * d if not bias else None, "gives the LayerNorms a bias when "
             "bias=False; bias=False removes those biases too"),
            (2 * attention + 2 * d * ff + 3 * norm, "forgets the feed-forward network's biases b_1 (d_ff) and "
             "b_2 (d_model)"),
            (2 * attention + 2 * d * ff + 2 * d * b + 3 * norm, "gives b_1 d_model entries; b_1 belongs to "
             "W_1, whose output has d_ff features"),
            (2 * attention + d * ff + (ff + d) * b + 3 * norm, "counts one matrix of the feed-forward network; "
             "it has two: W_1 (d_model → d_ff) and W_2 (d_ff → d_model)"),
            (2 * (3 * d * d + 3 * d * b) + ffn + 3 * norm, "forgets the attentions' output projections W_O "
             "(d_model × d_model, and a bias)"),
            (2 * H * attention + ffn + 3 * norm, "multiplies the attention by the number of heads; the heads "
             "share its projections (lesson 06)"),
        )
        for wrong, message in mistakes:
            if got == wrong and wrong != expected:
                raise Failure(f"{what} is {got}: your count {message}.")
        raise Failure(f"{what} is {got}, which is off by {got - expected:+d} from the real module's count. List "
                      "the parts: two attentions, a feed-forward network, three LayerNorms; then each one's "
                      "matrices (out × in) and vectors.")


decoder_layer_parameter_count = Exercise(
    number="8.2",
    title="parameters of a decoder layer",
    test=_test_decoder_count,
    hints=[
        "A decoder layer has three sublayers, each in its own residual block with its own LayerNorm: causal "
        "self-attention, cross-attention to the memory, and the feed-forward network.",
        "Each attention is lesson 06's layer: 4·d_model² weights and 4·d_model biases, whatever the number of "
        "heads. The feed-forward network: W_1 (d_ff × d_model) and W_2 (d_model × d_ff), with biases of d_ff "
        "and d_model. A LayerNorm: a gain of d_model, and a bias of d_model. bias=False removes every bias, "
        "but no gain.",
        "norms = 3 * (d_model + (d_model if bias else 0))  # three LayerNorms: a gain each, and maybe a bias",
    ],
    success="the count of torch's own TransformerDecoderLayer, with and without biases.",
)


# ----- 8.3 predict which run stalls ------------------------------------------------------------
RUNS = {
    "A": "post-norm, warm-up over 100 steps, peak learning rate 1e-2",
    "B": "post-norm, no warm-up, learning rate 1e-2",
    "C": "pre-norm, no warm-up, learning rate 1e-2",
    "D": "post-norm, no warm-up, learning rate 1e-3",
}
_OUTCOMES = {"A": "trains", "B": "stalls", "C": "trains", "D": "trains"}
_WHY = {
    "A": "run A is post-norm at the same high rate, but the warm-up keeps the first steps small, while Adam's "
         "estimates of the gradients settle and the output layers' large gradients shrink; then the full rate "
         "is safe. A trains",
    "B": "run B takes full-size Adam steps from step 1 in post-norm, where the layers near the output start "
         "with gradients about twice as large as pre-norm's, and nothing lets the model settle first. B stalls",
    "C": "run C is pre-norm: every layer's gradient starts small and no larger at the output than at the "
         "input, and the stream is never squeezed through a LayerNorm, so it trains at the full rate from "
         "step 1, warm-up or not. C trains",
    "D": "run D is post-norm without warm-up, but at a 10× smaller rate: its first steps are small anyway. "
         "Warm-up is about the size of the first steps, so D trains",
}


def _read_outcome(value, run: str) -> str:
    if not isinstance(value, str):
        raise Failure(f"your prediction for run {run} is a {type(value).__name__} ({value!r}); use the strings "
                      '"trains" or "stalls".')
    word = value.strip().lower()
    for outcome in ("trains", "stalls"):
        if word in (outcome, outcome[:-1]):  # "trains" or "train"
            return outcome
    raise Failure(f'your prediction for run {run} is {value!r}; use "trains" or "stalls".')


def _test_predict_stalls(t: Trial, predict_stalls) -> None:
    got = t.call(predict_stalls, what="predict_stalls()")
    if got is None:
        raise Failure("predict_stalls() returned None. Did your function forget to `return` its predictions?")
    if not isinstance(got, dict):
        raise Failure(f"predict_stalls() returned a {type(got).__name__}; expected a dict such as "
                      '{"A": "trains", "B": "stalls", ...}, one entry per run.')
    keys = {str(k).strip().upper(): v for k, v in got.items()}
    missing, extra = sorted(set(RUNS) - set(keys)), sorted(set(keys) - set(RUNS))
    if missing or extra:
        raise Failure(f"predict_stalls() must predict exactly the runs A, B, C and D; missing {missing or 'none'}, "
                      f"unknown {extra or 'none'}.")
    predicted = {run: _read_outcome(keys[run], run) for run in RUNS}
    wrong = [run for run in RUNS if predicted[run] != _OUTCOMES[run]]
    if set(predicted.values()) == {"stalls"}:
        raise Failure("you predict that every run stalls; but the runs differ from each other in one thing at a "
                      "time, and each of those things was chosen to help. Look at what runs A, C and D each change "
                      "with respect to run B.")
    if wrong:
        reasons = "; ".join(f"you predicted {predicted[run]} for run {run}, but {_WHY[run]}" for run in wrong)
        raise Failure(f"{len(wrong)} of the four predictions are off: {reasons}. Section 7 runs all four.")


predict_stalls = Exercise(
    number="8.3",
    title="predict which run stalls",
    test=_test_predict_stalls,
    hints=[
        "Three things differ between the runs: where the norm sits, whether the first steps are small "
        "(warm-up), and how large the learning rate is. Ask for each run: are its first Adam steps large, "
        "and does it land on layers whose gradients are out of balance?",
        "Section 6 found that at initialisation post-norm's layers near the output get gradients about twice as "
        "large as pre-norm's, and larger than post-norm's own first layers. Adam turns any gradient into a "
        "step of about the learning rate per weight.",
        "Only a run that is post-norm AND takes full-size steps from step 1 AND uses the high rate is in "
        "trouble. Check each of A, B, C, D against all three conditions.",
    ],
    success="only post-norm at the full rate from step 1 stalls; section 7 shows it.",
)
