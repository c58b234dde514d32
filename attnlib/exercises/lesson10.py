"""Exercises of lesson 10 (GPT: a decoder-only language model).

10.1 ``top_k_filter``: keep the k largest logits of each row, written from its contract.
10.2 ``left_padded_causal_mask``: the attention mask for a batch of prompts padded on the left.
10.3 ``gpt_parameter_count``: the parameters of an ``attnlib.GPT`` configuration, checked against the model.

Each checker first looks for the classic mistakes (the k smallest instead of the largest, zeros instead of
-inf, probabilities returned instead of logits; right padding assumed, the future or the padding forgotten,
torch.nn.MultiheadAttention's opposite convention; the output layer counted twice, a layer norm or the
position table forgotten) and names them.
"""

from __future__ import annotations


import torch

from ._core import Exercise, Failure, Trial, close, whole_number


# ----- 10.1 top-k filtering ----------------------------------------------------------------------
def _top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k >= logits.shape[-1]:
        return logits.clone()
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))  # (..., V)


def _test_top_k(t: Trial, top_k_filter) -> None:
    cases = ((t.randn(4, 10) * 3, 3), (t.randn(2, 3, 7), 1), (t.randn(5, 12), 11), (t.randn(3, 6), 6),
             (t.randn(2, 5), 9))
    for logits, k in cases:
        what = f"top_k_filter(logits of shape {tuple(logits.shape)}, k={k})"
        try:
            got = t.call(top_k_filter, logits, k, what=what)
        except Failure as failure:
            if k > logits.shape[-1] and "out of range" in str(failure):
                raise Failure(f"{failure}\n  Tip: topk cannot pick k = {k} of {logits.shape[-1]} logits. When "
                              "k >= V there is nothing to rule out: return the logits as they are.") from None
            raise
        expected = _top_k(logits, k)
        if hasattr(got, "values") and hasattr(got, "indices") and not isinstance(got, torch.Tensor):
            raise Failure(f"{what} returned what topk returns, the k largest values and their indices. Use the "
                          "k-th largest value to decide which logits to keep, and return a tensor of the logits' "
                          "shape (..., V), with -inf for the others.")
        if isinstance(got, torch.Tensor) and got.dtype == torch.bool:
            raise Failure(f"{what} returned a boolean tensor; return the logits themselves, with -inf where a "
                          "token is ruled out, so that a softmax of the result gives the filtered distribution.")
        if not (isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == expected.dtype
                and got.device == expected.device):
            t.expect_tensor(got, expected, what)  # explains the type, shape, dtype or device
        if bool(torch.isnan(got).any()) or bool((got == float("inf")).any()):
            raise Failure(f"{what} contains NaN or +inf; only -inf (a ruled-out token) is allowed.")
        kept, wanted = torch.isfinite(got), torch.isfinite(expected)
        if k < logits.shape[-1] and bool(torch.isfinite(got).all()):
            if close(got, torch.softmax(expected, dim=-1)):
                raise Failure(f"{what} returned probabilities; return logits (with -inf for the dropped "
                              "tokens): the sampler applies the temperature and the softmax afterwards.")
            if bool(((got == 0) == ~wanted).all()):
                raise Failure(f"{what} sets the dropped logits to 0. A logit of 0 is not impossible, it is "
                              "exp(0) = 1 before normalising: set them to float('-inf').")
        if not torch.equal(kept, wanted):
            counts = kept.sum(dim=-1).flatten().tolist()
            smallest = torch.isfinite(-_top_k(-logits, k))
            if torch.equal(kept, smallest) and k < logits.shape[-1]:
                raise Failure(f"{what} keeps the k smallest logits; keep the k largest (topk's default, "
                              "largest=True).")
            if len(set(counts)) == 1 and counts[0] in (k - 1, k + 1):
                raise Failure(f"{what} keeps {counts[0]} tokens per row; it must keep exactly k = {k} "
                              "(compare with the k-th largest value, values[..., -1:], using <, not <=).")
            if logits.dim() == 2 and k < logits.shape[0] and torch.equal(kept, torch.isfinite(
                    _top_k(logits.transpose(0, 1), k).transpose(0, 1))):
                raise Failure(f"{what} picks the k largest of each column; filter along the last dimension "
                              "(dim=-1), the vocabulary.")
            raise Failure(f"{what} keeps the wrong tokens: {counts} per row, expected {min(k, logits.shape[-1])} "
                          "per row, the largest ones.")
        t.expect_tensor(got.masked_fill(~wanted, 0.0), expected.masked_fill(~wanted, 0.0),
                        what + ": the logits it keeps", atol=1e-6)


top_k_filter = Exercise(
    number="10.1",
    title="top-k filtering",
    test=_test_top_k,
    hints=[
        "Find, for every row, the k-th largest logit; every logit below it is ruled out. `logits.topk(k, dim=-1)` "
        "returns the k largest values of each row, largest first. If k >= V there is nothing to rule out "
        "(and topk would fail).",
        "Ruling out means -inf, not 0: softmax turns -inf into a probability of exactly 0. "
        "`logits.masked_fill(condition, float('-inf'))` does it without changing the input.",
        "kth_largest = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1): broadcasts over the row",
    ],
    success="the k largest logits kept, the others at -inf, along the vocabulary.",
)


# ----- 10.2 the causal mask of a left-padded batch ---------------------------------------------
def _left_padded(lengths: torch.Tensor, length: int) -> torch.Tensor:
    positions = torch.arange(length)  # (T,)
    real = positions[None, :] >= length - lengths[:, None]  # (B, T): the last lengths[b] positions are real
    causal = positions[None, :] <= positions[:, None]  # (T, T): key j ≤ query i
    return real[:, None, None, :] & causal  # (B, 1, T, T)


def _test_left_padded(t: Trial, left_padded_causal_mask) -> None:
    for lengths, T in (([5, 3, 1], 5), ([2, 6, 4, 6], 6), ([1], 4)):
        lengths = torch.tensor(lengths)
        what = f"left_padded_causal_mask(lengths={lengths.tolist()}, length={T})"
        got = t.call(left_padded_causal_mask, lengths, T, what=what)
        expected = _left_padded(lengths, T)
        if got is None:
            raise Failure(f"{what} is None. Did your function forget to `return` the mask?")
        if not isinstance(got, torch.Tensor):
            raise Failure(f"{what} is a {type(got).__name__}; a boolean torch.Tensor was expected.")
        if got.dtype != torch.bool:
            raise Failure(f"{what} has dtype {got.dtype}; a mask is boolean (True = may attend): build it from "
                          "comparisons such as `<=`.")
        B = len(lengths)
        if tuple(got.shape) == (B, T, T):
            raise Failure(f"{what} has shape {(B, T, T)}; give it a heads axis, (B, 1, T, T), so that it "
                          "broadcasts over the heads of (B, H, T, T) scores: mask[:, None].")
        if tuple(got.shape) != (B, 1, T, T):
            raise Failure(f"{what} has shape {tuple(got.shape)}; expected (B, 1, T, T) = {(B, 1, T, T)}.")
        if torch.equal(got, expected):
            continue
        positions = torch.arange(T)
        causal = positions[None, :] <= positions[:, None]  # (T, T)
        right = (positions[None, :] < lengths[:, None])[:, None, None, :] & causal
        real = (positions[None, :] >= T - lengths[:, None])[:, None, None, :]
        mistakes = (
            (~expected, "is inverted: True must mean *may attend* (torch.nn.MultiheadAttention's masks mean the "
             "opposite)"),
            (right, "treats the padding as if it were on the right; here each prompt is padded on the left, so "
             "its lengths[b] real tokens are the *last* ones: key j is real when j >= length - lengths[b]"),
            (real.expand(B, 1, T, T), "lets every query see the future; combine the padding with the causal "
             "condition key j <= query i"),
            (causal.expand(B, 1, T, T), "forgets the padding: no query may attend to a padding key"),
            (real & (positions[None, :] < positions[:, None]), "hides each token from itself; a query may attend "
             "to its own position (j <= i, not j < i)"),
        )
        for wrong, message in mistakes:
            if torch.equal(got, wrong):
                raise Failure(f"{what} {message}.")
        diff = (got != expected).nonzero()[0].tolist()
        raise Failure(f"{what} is wrong at {int((got != expected).sum())} entries, e.g. sequence {diff[0]}, query "
                      f"{diff[2]}, key {diff[3]}: expected {bool(expected[tuple(diff)])}.")


left_padded_causal_mask = Exercise(
    number="10.2",
    title="the causal mask of a left-padded batch",
    test=_test_left_padded,
    hints=[
        "Two conditions, both needed: the key must be a real token (not padding), and it must not lie in the "
        "query's future. Build each as a comparison of positions, then combine them with `&`.",
        "Left padding: sequence b's real tokens are its last lengths[b] positions, so key j is real when "
        "j >= length - lengths[b]. Causal: key j is visible from query i when j <= i. Shapes: real (B, 1, 1, T), "
        "causal (T, T); they broadcast to (B, 1, T, T).",
        "real = positions[None, :] >= length - lengths[:, None]  # (B, T)",
    ],
    success="real keys only, and no future: padded queries see nothing and get zeros from attention.",
)


# ----- 10.3 parameters of a GPT ---------------------------------------------------------------
def _real_count(vocab_size, block_size, n_layer, n_head, d_model) -> int:
    from ..gpt import GPT

    with torch.device("meta"):  # shapes only: nothing is allocated
        model = GPT(vocab_size, block_size, n_layer, n_head, d_model)
    return model.num_parameters()


def _test_parameter_count(t: Trial, gpt_parameter_count) -> None:
    configs = ((65, 64, 4, 4, 128), (96, 32, 2, 2, 64), (50257, 1024, 12, 12, 768), (11, 8, 1, 1, 8), (100, 16, 3, 4, 32))
    for V, T, L, H, d in configs:
        what = f"gpt_parameter_count(vocab_size={V}, block_size={T}, n_layer={L}, n_head={H}, d_model={d})"
        got = whole_number(t.call(gpt_parameter_count, V, T, L, H, d, what="gpt_parameter_count"), what)
        expected = _real_count(V, T, L, H, d)
        if got == expected:
            continue
        block = 12 * d * d + 13 * d
        mistakes = (
            (expected + V * d, "counts the output layer's matrix separately; it is the token embedding itself "
             "(weight tying), counted once"),
            (expected - T * d, "forgets the position embedding (block_size × d_model)"),
            (expected - 2 * d, "forgets the final layer norm before the output layer"),
            (expected - L * 4 * d, "forgets the two layer norms of each block (a scale and a shift each)"),
            (expected - L * 2 * d - d, "gives each layer norm d_model parameters; it has a scale *and* a shift "
             "(a bias) of d_model each"),
            (expected - L * 9 * d, "forgets the biases of the linear layers (attention's four projections and the "
             "feed-forward network's two)"),
            (expected - L * (6 * d * d + 3 * d), "gives the feed-forward network a hidden width of d_model; it is "
             "d_ff = 4·d_model wide"),
            (expected - L * (2 * d * d + 2 * d), "counts the stacked Q, K, V projection as d_model × d_model; it "
             "is three such matrices, (3·d_model, d_model), with a bias of 3·d_model"),
            (V * d + T * d + 2 * d + H * L * block, "multiplies the blocks by the number of heads; heads split "
             "d_model between them and add no parameters (lesson 06)"),
        )
        for wrong, message in mistakes:
            if got == wrong and wrong != expected:
                raise Failure(f"{what} is {got}: your count {message}.")
        raise Failure(f"{what} is {got}, which is off by {got - expected:+d} from the model's own count. List the "
                      "pieces: two embeddings, n_layer blocks (attention, feed-forward, two layer norms), a final "
                      "layer norm; and the output layer?")


gpt_parameter_count = Exercise(
    number="10.3",
    title="the parameters of a GPT",
    test=_test_parameter_count,
    hints=[
        "Outside the blocks: the token embedding (vocab_size × d_model), the position embedding (block_size × "
        "d_model), the final layer norm, and the output layer, which is the token embedding again (weight tying): "
        "count it once.",
        "One block: attention has W_Q, W_K, W_V, W_O (d_model × d_model each) with a bias each; the feed-forward "
        "network maps d_model → 4·d_model → d_model, with biases; two layer norms have a scale and a shift of "
        "d_model each. n_head changes nothing.",
        "per_block = (4 * d * d + 4 * d) + (8 * d * d + 5 * d) + 4 * d  # attention, feed-forward, two norms",
    ],
    success="the model's own count, tied output layer counted once (and the heads added nothing).",
)
