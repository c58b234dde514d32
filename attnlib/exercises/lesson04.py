"""Exercises of lesson 04 (the bottleneck, and attention in seq2seq).

4.1 ``additive_scores``: Bahdanau's score tanh(q_t W_q + k_j W_k) · v for every query t and every key j at once.
4.2 ``path_lengths``: how many recurrent updates lie between a source symbol and the output that copies it,
    with and without attention, for copying and for reversing.
4.3 ``decoder_step``: one step of an attentive GRU decoder, built from a model's parts and the equations.
4.4 ``reverse_alignment``: the alignment a model should learn for reversing, predicted for a padded batch.

Weights follow lesson 03's convention: a row vector times a matrix, ``x @ W`` with W of shape (in, out).
"""

from __future__ import annotations

import operator

import torch

from ._core import Exercise, Failure, Trial


# ----- 4.1 additive scores -----------------------------------------------------------------
def _reference_additive_scores(queries, keys, W_q, W_k, v):
    projected_queries = queries @ W_q  # (B, T, A)
    projected_keys = keys @ W_k  # (B, S, A)
    hidden = torch.tanh(projected_queries[:, :, None, :] + projected_keys[:, None, :, :])  # (B, T, S, A)
    return hidden @ v  # (B, T, S)


def _test_additive_scores(t: Trial, additive_scores) -> None:
    B, T, S, Dq, Dk, A = 2, 3, 5, 4, 7, 6  # all different, so a swapped axis or weight cannot slip through
    queries, keys = t.randn(B, T, Dq), t.randn(B, S, Dk)  # (B, T, Dq), (B, S, Dk)
    W_q, W_k, v = t.randn(Dq, A), t.randn(Dk, A), t.randn(A)  # (Dq, A), (Dk, A), (A,)
    expected = _reference_additive_scores(queries, keys, W_q, W_k, v)  # (B, T, S)
    what = f"additive_scores(queries {(B, T, Dq)}, keys {(B, S, Dk)}, W_q {(Dq, A)}, W_k {(Dk, A)}, v {(A,)})"
    try:
        got = t.call(additive_scores, queries, keys, W_q, W_k, v, what="additive_scores")
    except Failure as failure:
        if "mat1 and mat2 shapes cannot be multiplied" in str(failure) or "size mismatch" in str(failure):
            raise Failure(f"{failure}\n  Tip: W_q has shape (Dq, A) = {(Dq, A)}, lesson 03's convention: a row "
                          "vector times the matrix, `queries @ W_q`, with no transpose.") from None
        raise

    if isinstance(got, torch.Tensor):
        shape = tuple(got.shape)
        if shape == (B, T, S, A):
            raise Failure(
                f"{what} has shape {shape}: one vector per (query, key) pair instead of one number. "
                "The last step, the dot product with v, is missing."
            )
        if shape == (B, T, S, 1):
            raise Failure(f"{what} has shape {shape}; expected {(B, T, S)}. Squeeze the last dimension away.")
        if shape == (B, S, T):
            raise Failure(
                f"{what} has shape {shape}, keys before queries; expected {(B, T, S)}: row t holds "
                "query t's scores against every key. Give the queries the new axis at position 2 and the "
                "keys at position 1."
            )
        comparable = shape == (B, T, S) and got.dtype == expected.dtype and got.device == expected.device
        if comparable and torch.isfinite(got.detach()).all():
            linear = (queries @ W_q)[:, :, None, :] + (keys @ W_k)[:, None, :, :]  # (B, T, S, A)
            if torch.allclose(got.detach(), linear @ v, atol=1e-4):
                raise Failure(
                    f"{what} equals (q W_q + k W_k) · v: the tanh is missing. Without it the score is "
                    "linear and the small network inside additive attention loses its power."
                )
            if torch.allclose(got.detach(), torch.softmax(expected, dim=-1), atol=1e-5):
                raise Failure(
                    f"{what} looks like softmax weights (each row sums to one). Return the raw scores; "
                    "turning them into weights is the masked softmax of lesson 02."
                )
    t.expect_tensor(got, expected, what)

    # One query, one key: the formula by hand.
    q1, k1 = t.randn(1, 1, Dq), t.randn(1, 1, Dk)  # (1, 1, Dq), (1, 1, Dk)
    by_hand = torch.dot(torch.tanh(q1[0, 0] @ W_q + k1[0, 0] @ W_k), v)  # ()
    got = t.call(additive_scores, q1, k1, W_q, W_k, v, what="additive_scores")
    t.expect_tensor(got, by_hand.reshape(1, 1, 1), "additive_scores for one query and one key (B = T = S = 1)")


additive_scores = Exercise(
    number="4.1",
    title="additive scores",
    test=_test_additive_scores,
    hints=[
        "Work from the inside out, in lesson 03's convention (a row vector times a matrix): `queries @ W_q` "
        "projects every query, shape (B, T, A); `keys @ W_k` every key, shape (B, S, A). Those two products are "
        "what section 4 computes once per step; here they are done for all T queries at once.",
        "Every query must meet every key: give the projected queries a key axis and the projected keys a "
        "query axis, (B, T, 1, A) + (B, 1, S, A) broadcasts to (B, T, S, A). Then tanh, then `@ v` turns "
        "each A-vector into one number.",
        "hidden = torch.tanh(projected_queries[:, :, None, :] + projected_keys[:, None, :, :])  # (B, T, S, A)",
    ],
    success="tanh(q_t W_q + k_j W_k) · v for every query and every key at once.",
)


# ----- 4.2 path lengths ----------------------------------------------------------------------
TASKS = ("copy", "reverse")


def _path_lengths(n: int, task: str, attention: bool) -> list[int]:
    """Recurrent updates between source token j and the prediction of output t, for each t = 1..n."""
    if attention:
        return [1] * n  # x_j -> h_j (encoder update j) -> c_t -> logits_t
    sources = range(1, n + 1) if task == "copy" else range(n, 0, -1)  # output t copies source j
    return [(n - j + 1) + t for t, j in zip(range(1, n + 1), sources)]  # encoder j..n, then decoder 1..t


def _as_ints(got, what: str, n: int) -> list[int]:
    if got is None:
        raise Failure(f"{what} is None. Did your function forget to `return` the list of lengths?")
    if isinstance(got, torch.Tensor):
        if got.is_floating_point() or got.dim() != 1:
            raise Failure(f"{what} is a tensor of shape {tuple(got.shape)} and dtype {got.dtype}; return a list of "
                          "whole numbers (ints), one per output step.")
        got = got.tolist()
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        raise Failure(f"{what} is the single number {got!r}; return a list with one length per output step "
                      f"t = 1, ..., n ({n} numbers).")
    try:
        values = list(got)
    except TypeError:
        raise Failure(f"{what} is a {type(got).__name__}; a list of ints was expected.") from None
    if len(values) != n:
        raise Failure(f"{what} holds {len(values)} numbers; expected {n}, one per output step t = 1, ..., n "
                      "(the step that writes EOS is not counted).")
    ints = []
    for value in values:
        if isinstance(value, bool):
            raise Failure(f"{what} holds {value!r}; the lengths are whole numbers (ints).")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        try:
            ints.append(operator.index(value))
        except TypeError:
            raise Failure(f"{what} holds {value!r} (a {type(value).__name__}); the lengths are whole numbers.") from None
    return ints


def _test_path_lengths(t: Trial, path_lengths) -> None:
    for attention in (False, True):
        for task in TASKS:
            for n in (3, 1, 7, 20):
                what = f"path_lengths(n={n}, task={task!r}, attention={attention})"
                got = _as_ints(t.call(path_lengths, n, task, attention, what="path_lengths"), what, n)
                expected = _path_lengths(n, task, attention)
                if got == expected:
                    continue
                _explain_path_lengths(got, expected, n, task, attention, what)


def _explain_path_lengths(got, expected, n, task, attention, what) -> None:
    steps = range(1, n + 1)
    sources = list(steps) if task == "copy" else [n + 1 - s for s in steps]
    example = f" (for n = {n}, output 1 gets {got[0]}; expected {expected[0]})"
    if attention:
        if got == _path_lengths(n, task, False):
            raise Failure(f"{what} is the count without attention. With attention the output layer reads "
                          "[s_t; c_t], and the context c_t is a weighted sum of the encoder states h_j "
                          "themselves: the symbol reaches the prediction through encoder update j alone.")
        if got == [2] * n:
            raise Failure(f"{what} counts 2 updates: but the output layer reads the context c_t directly, not "
                          "only through the decoder's new state. Shortest path: x_j -> h_j -> c_t -> logits.")
        raise Failure(f"{what} is {got}; with attention every source state is one step from every output. "
                      "Count the updates on the path x_j -> h_j -> c_t -> logits_t.")
    mistakes = (
        ([n - j + 1 for j in sources], "counts only the encoder's updates. The token must also cross the "
         "decoder: s_0 = h_n, and the prediction of output t reads s_t, made by decoder updates 1, ..., t"),
        (list(steps), "counts only the decoder's updates. Before the decoder starts, the token must cross the "
         "encoder: update j reads it, then updates j + 1, ..., n carry it to h_n"),
        ([n - j + s for s, j in zip(steps, sources)], "is one short for every output: encoder update j, the one "
         "that reads the token, counts too. Check with n = 3: source token 1 reaches output 1 through encoder "
         "updates 1, 2, 3 and decoder update 1, four in all"),
        ([n - j + s + 2 for s, j in zip(steps, sources)], "is one too many for every output: the prediction of "
         "output t reads s_t, so decoder updates 1, ..., t (t of them) are crossed, and encoder updates j, ..., n"),
    )
    if task == "reverse" and got == _path_lengths(n, "copy", False):
        raise Failure(f"{what} is the count for copying. Reversing, output t copies source token n + 1 - t, "
                      "not token t: the first output needs the *last* token.")
    for wrong, message in mistakes:
        if got == wrong:
            raise Failure(f"{what} {message}{example}.")
    worst = max(range(n), key=lambda i: abs(got[i] - expected[i]))
    raise Failure(f"{what} is off: for output {worst + 1}, which copies source token {sources[worst]}, it gives "
                  f"{got[worst]}, expected {expected[worst]}. Count the encoder updates from the one that reads "
                  "the token to h_n, then the decoder updates up to the state that predicts the output.")


path_lengths = Exercise(
    number="4.2",
    title="how far a symbol travels",
    test=_test_path_lengths,
    hints=[
        "Follow one symbol. Without attention, source token j is read by encoder update j, which makes h_j; "
        "updates j + 1, ..., n carry it on to h_n; the decoder starts from s_0 = h_n, and the logits of output t "
        "are read from s_t. Count the updates crossed. (n = 3, j = 1, t = 1: encoder 1, 2, 3 and decoder 1.)",
        "Which source token does output t need? Copying: token t. Reversing: token n + 1 - t. With attention, "
        "the logits read [s_t; c_t] and c_t is a weighted sum of the h_j themselves.",
        "updates = (n - j + 1) + t  # without attention: encoder updates j, ..., n, then decoder updates 1, ..., t",
    ],
    success="without attention a copied symbol crosses n + 1 updates, reversing shortens the first outputs' "
            "paths, and attention makes every path one update long.",
)


# ----- 4.3 one decoder step with attention ------------------------------------------------
def _small_model(t: Trial):
    from ..seq2seq import Seq2Seq

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(4)
    model = Seq2Seq(11, embed_dim=6, hidden_dim=8, attention="additive").to(t.device)  # E + H = 14 ≠ 2H = 16
    torch.random.set_rng_state(generator_state)  # leave the learner's random stream alone
    return model


def _reference_step(model, token, state, keys, mask, *, attend_with_new_state=False, swap_input=False,
                    swap_output=False):
    """The right decoder step, or (with a flag) one of the typical mistakes, for the diagnosis."""
    embedded = model.target_embedding(token)  # (B, E)
    context, weights = model.scorer(state, keys, mask)  # (B, H), (B, S)
    if attend_with_new_state:  # the mistake of attending after the update
        new_state = model.decoder(torch.cat([embedded, context], dim=-1), state)  # (B, H)
        context, weights = model.scorer(new_state, keys, mask)  # (B, H), (B, S)
    parts = [context, embedded] if swap_input else [embedded, context]
    new_state = model.decoder(torch.cat(parts, dim=-1), state)  # (B, E + H) -> (B, H)
    parts = [context, new_state] if swap_output else [new_state, context]
    logits = model.output(torch.cat(parts, dim=-1))  # (B, 2H) -> (B, V)
    return logits, new_state, weights, context


def _test_decoder_step(t: Trial, decoder_step) -> None:
    model = _small_model(t)
    B, S, H, V = 3, 5, model.hidden_dim, model.vocab_size
    token = t.randint(3, V, (B,))  # (B,)
    state, keys = t.randn(B, H), t.randn(B, S, H)  # (B, H), (B, S, H)
    lengths = torch.tensor([5, 3, 2], device=t.device)  # (B,)
    mask = torch.arange(S, device=t.device)[None, :] < lengths[:, None]  # (B, S)
    what = f"decoder_step(model, token {(B,)}, state {(B, H)}, keys {(B, S, H)}, mask {(B, S)})"
    with torch.no_grad():
        logits_ok, state_ok, weights_ok, context_ok = _reference_step(model, token, state, keys, mask)
        got = t.call(decoder_step, model, token, state, keys, mask, what="decoder_step")
        if got is None:
            raise Failure(f"{what} returned None. Did you forget `return logits, new_state, weights`?")
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            kind = type(got).__name__ + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else "")
            raise Failure(f"{what} returned a {kind}; expected a triple `(logits, new_state, weights)`.")
        logits, new_state, weights = got

        _expect_layout(t, weights, weights_ok, "the attention weights (third result)")
        late = _reference_step(model, token, state, keys, mask, attend_with_new_state=True)[2]  # (B, S)
        if torch.allclose(weights, late, atol=1e-5) and not torch.allclose(weights, weights_ok, atol=1e-5):
            raise Failure(
                "your attention weights come from the *new* state. In Bahdanau's decoder the previous "
                "state (the `state` argument) chooses where to look; the new state is computed after that, "
                "from the previous token and the context."
            )
        t.expect_tensor(weights, weights_ok, "the attention weights, model.scorer(state, keys, mask)")

        _expect_layout(t, new_state, state_ok, "the new state (second result)")
        if torch.allclose(new_state, state, atol=1e-6):
            raise Failure("the new state equals the old one: pass [embedded token; context] through model.decoder.")
        swapped = _reference_step(model, token, state, keys, mask, swap_input=True)[1]  # (B, H)
        if torch.allclose(new_state, swapped, atol=1e-5):
            raise Failure(
                "the decoder cell got [context; embedded token]; it reads them the other way round: "
                "torch.cat([embedded, context], dim=-1)."
            )
        t.expect_tensor(new_state, state_ok, "the new state, model.decoder([embedded; context], state)")

        _expect_layout(t, logits, logits_ok, "the logits (first result)")
        swapped = _reference_step(model, token, state, keys, mask, swap_output=True)[0]  # (B, V)
        if torch.allclose(logits, swapped, atol=1e-5):
            raise Failure(
                "model.output got [context; new state]; it reads them the other way round: "
                "torch.cat([new_state, context], dim=-1)."
            )
        from_old_state = model.output(torch.cat([state, context_ok], dim=-1))  # (B, V)
        if torch.allclose(logits, from_old_state, atol=1e-5):
            raise Failure("the logits come from the old state; use the new state that model.decoder returned.")
        t.expect_tensor(logits, logits_ok, "the logits, model.output([new_state; context])")


def _expect_layout(t: Trial, got, like: torch.Tensor, what: str) -> None:
    """``got`` must be a finite tensor with the type, shape, dtype and device of ``like`` (values not compared)."""
    t.expect_tensor(got, torch.zeros_like(like), what, atol=float("inf"))


decoder_step = Exercise(
    number="4.3",
    title="decoder step",
    test=_test_decoder_step,
    hints=[
        "Three moves, in Bahdanau's order: (1) the previous state chooses where to look: "
        "`context, weights = model.scorer(state, keys, mask)`; (2) the GRU cell reads the previous token and "
        "that context: `model.decoder(torch.cat([embedded, context], -1), state)`; (3) the output layer reads "
        "the new state and the context.",
        "The previous token becomes a vector with `model.target_embedding(token)`, shape (B, E). "
        "Concatenate along the last axis (dim=-1): [embedded; context] is (B, E + H), [new_state; context] "
        "is (B, 2H).",
        "new_state = model.decoder(torch.cat([embedded, context], dim=-1), state)  # (B, E + H) -> (B, H)",
    ],
    success="the same step as attnlib's Seq2Seq decoder: attend with the old state, update, predict.",
)


# ----- 4.4 the reverse task's alignment ---------------------------------------------------------
def _reverse_alignment(source_mask: torch.Tensor) -> torch.Tensor:
    B, S = source_mask.shape
    lengths = source_mask.sum(dim=1)  # (B,)
    steps = torch.arange(S + 1)[None, :, None]  # (1, S + 1, 1)
    positions = torch.arange(S)[None, None, :]  # (1, 1, S)
    wanted = lengths[:, None, None] - 1 - steps  # (B, S + 1, 1): output t reads input n - 1 - t
    return (positions == wanted).float()  # (B, S + 1, S); rows t >= n have no match: all zeros


def _padded_mask(lengths, S, device) -> torch.Tensor:
    return torch.arange(S, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]  # (B, S)


def _test_reverse_alignment(t: Trial, reverse_alignment) -> None:
    for lengths, S in (([5, 3, 1, 4], 5), ([2, 2], 2), ([6, 1, 6], 6), ([1], 1)):
        mask = _padded_mask(lengths, S, t.device)  # (B, S)
        B = len(lengths)
        what = f"reverse_alignment(source_mask) for lengths {lengths}, padded to S = {S}"
        got = t.call(reverse_alignment, mask, what="reverse_alignment")
        expected = _reverse_alignment(mask.cpu()).to(t.device)  # (B, S + 1, S)
        if isinstance(got, torch.Tensor):
            shape = tuple(got.shape)
            if shape == (B, S, S):
                raise Failure(f"{what} has shape {shape}; expected (B, S + 1, S) = {(B, S + 1, S)}: the decoder "
                              "writes up to S symbols and then EOS, one row per output step.")
            if shape == (B, S, S + 1):
                raise Failure(f"{what} has shape {shape}: rows and columns are swapped. Row t is output step t "
                              f"(S + 1 of them), column j is input position j (S of them): {(B, S + 1, S)}.")
            if shape == expected.shape and not got.is_floating_point():
                raise Failure(f"{what} has dtype {got.dtype}; attention weights are floats: return 0.0 and 1.0 as "
                              "torch.float32 (e.g. with `.float()`).")
            if shape == expected.shape and got.is_floating_point() and torch.isfinite(got).all():
                g = got.detach().float().cpu()
                e = expected.cpu()
                steps = torch.arange(S + 1)[None, :, None]  # (1, S + 1, 1)
                positions = torch.arange(S)[None, None, :]  # (1, 1, S)
                real = steps < torch.tensor(lengths)[:, None, None]  # (B, S + 1, 1): steps that write a symbol
                diagonal = ((positions == steps) & real).float()  # (B, S + 1, S)
                padded = ((positions == S - 1 - steps) & real).float()  # (B, S + 1, S)
                if torch.equal(g * real, diagonal) and not torch.equal(diagonal, e):
                    raise Failure(f"{what}: this is the copy task's alignment, the diagonal (output t reads input "
                                  "t). Reversing, output t must read input n - 1 - t (from 0): the anti-diagonal.")
                if torch.equal(g * real, padded) and not torch.equal(padded, e):
                    raise Failure(f"{what}: output t reads input S - 1 - t, counted from the end of the *padded* "
                                  "row. A shorter string ends before the padding: row b must count back from its "
                                  "own last real token, n_b - 1 - t, where n_b = source_mask[b].sum().")
                if torch.equal(g * real, e) and not torch.equal(g, e):
                    raise Failure(f"{what}: the rows that write symbols are right, but the rows t >= n_b (the step "
                                  "that writes EOS, and the padding after it) are not all zero. No input is "
                                  "copied there: give them zero weight everywhere.")
                if not torch.equal(g.sum(dim=-1) * real[..., 0], real[..., 0].float()):
                    raise Failure(f"{what}: a row that writes a symbol must be one-hot: a single 1 on the input "
                                  "position it copies, 0 elsewhere.")
        t.expect_tensor(got, expected, what)


reverse_alignment = Exercise(
    number="4.4",
    title="the alignment of reversing",
    test=_test_reverse_alignment,
    hints=[
        "Predict one row first. A string of n real tokens is reversed: output step t (counting from 0) writes "
        "source token n - 1 - t, so an attention that has learned the task puts its weight there. Steps t >= n "
        "(the EOS, then padding) copy nothing: zeros.",
        "Every row b has its own n_b = source_mask[b].sum(). Compare a grid of output steps t (S + 1 of them) "
        "with a grid of input positions j (S of them) by broadcasting, (B, S + 1, 1) against (1, 1, S); "
        "rows t >= n_b then find no j and stay zero by themselves.",
        "wanted = lengths[:, None, None] - 1 - steps  # (B, S + 1, 1): the input that output t copies",
    ],
    success="the anti-diagonal, row by row, each string counted back from its own last token.",
)
