"""Exercises of lesson 05 (self-attention).

5.1 ``previous_token_projections``: hand-set W_Q and W_K so that every token attends to the one before it.
5.2 ``window_mask``: the mask for "attend to yourself and the previous ``window`` tokens only".
5.3 ``longest_sequence``: the longest sequence whose attention weights fit in a memory budget.

Each checker first looks for the classic mistakes (a head that looks at itself or at the next token, a
softmax too soft, a window that sees the future or is one token off, a count that forgets the batch or the
heads) and names them; only then does it fall back to a plain comparison.
"""

from __future__ import annotations

import math
import operator

import torch

from ._core import Exercise, Failure, Trial, query_key_weights


# ----- 5.1 a previous-token head -----------------------------------------------------------
def _inputs_with_positions(t: Trial, batch: int, length: int, max_len: int, d_content: int, content_scale: float):
    """x = [one-hot position (max_len) | content (d_content)]: (B, L, max_len + d_content)."""
    positions = torch.eye(max_len)[:length].expand(batch, length, max_len)  # (B, L, max_len)
    content = content_scale * t.randn(batch, length, d_content)  # (B, L, d_content)
    return torch.cat([positions, content], dim=-1)  # (B, L, max_len + d_content)


def _head_weights(x, W_Q, W_K):
    """softmax((x W_Q)(x W_K)ᵀ / √d_k) without a mask: (B, L, L)."""
    q, k = x @ W_Q, x @ W_K  # (B, L, d_k) each
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, L, L)
    return torch.softmax(scores, dim=-1)  # (B, L, L)


def _test_previous_token(t: Trial, previous_token_projections) -> None:
    for max_len, d_content, length in ((6, 5, 6), (10, 3, 10), (10, 3, 4)):
        d_model = max_len + d_content
        what = f"previous_token_projections(max_len={max_len}, d_content={d_content})"
        W_Q, W_K = query_key_weights(t.call(previous_token_projections, max_len, d_content,
                                            what="previous_token_projections"), what, d_model, "max_len + d_content")
        where = f"for a sequence of {length} tokens" + (f" (shorter than max_len={max_len})" if length < max_len else "")
        for content_scale in (0.0, 3.0):
            x = _inputs_with_positions(t, 3, length, max_len, d_content, content_scale)  # (B, L, d_model)
            weights = _head_weights(x, W_Q, W_K)  # (B, L, L)
            if not torch.isfinite(weights).all():
                raise Failure(f"{what} gives NaN attention weights {where}: the scores overflow. A scale that "
                              "makes the right score about 20 larger than the others is plenty.")
            rows = torch.arange(1, length)  # queries 1 .. L-1 (position 0 has no previous token)
            looked = weights[:, rows].argmax(dim=-1)  # (B, L-1): where each query looks most
            on_previous = weights[:, rows, rows - 1]  # (B, L-1): weight on the previous token
            if bool((looked == rows - 1).all()) and on_previous.min().item() >= 0.95:
                continue
            noisy = " when the content features are not zero" if content_scale else ""
            if content_scale and not bool((looked == rows - 1).float().mean() > 0.99):
                raise Failure(f"{what} works on positions alone, but{noisy} the head looks elsewhere: the content "
                              "features reach the scores. Keep the rows of W_Q and W_K for the content features "
                              "(rows max_len and beyond) at zero, so only positions decide.")
            if bool((looked == rows).float().mean() > 0.5):
                raise Failure(f"{what}: most tokens attend to themselves {where}. With the same map for queries "
                              "and keys, q_i·k_i is the largest score (lesson 02's observation). Position i's "
                              "query must match the key of position i - 1, not its own.")
            if bool((looked == (rows + 1).clamp(max=length - 1)).float().mean() > 0.5):
                raise Failure(f"{what}: tokens attend to the *next* token {where}. The shift goes the wrong way: "
                              "position i's query must match the key of position i - 1.")
            if bool((looked == rows - 1).all()):
                raise Failure(f"{what}: every token looks most at the previous one{noisy}, but too softly: the "
                              f"smallest such weight is {on_previous.min().item():.3f} {where}, and 0.95 is "
                              "wanted. Remember the 1/√d_k in the scores; scale W_Q (or W_K) up so the right "
                              "score stands far above the others.")
            share = (looked == rows - 1).float().mean().item()
            raise Failure(f"{what}: only {share:.0%} of the tokens (positions 1 and later) look most at the "
                          f"previous token {where}{noisy}. Position i's query must match position i - 1's key.")


previous_token_projections = Exercise(
    number="5.1",
    title="a previous-token head",
    test=_test_previous_token,
    hints=[
        "Keys first: let each position announce where it is. If W_K copies the one-hot position part of x "
        "(the first max_len features) and ignores the content, the key of position j is the unit vector e_j.",
        "Then the query of position i should *be* e_(i-1): a score q_i·k_j = 1 exactly when j = i - 1, else 0. "
        "That is a matrix that moves a 1 from row i to column i - 1, with zero rows for the content features.",
        "The scores are divided by √d_k, and a softmax of scores 1 and 0 is far from one-hot. Multiply W_Q by a "
        "large number so the right score is about 20 above the rest.",
        "W_Q[1:max_len, :max_len - 1] = 20 * math.sqrt(max_len) * torch.eye(max_len - 1)  # row i -> column i - 1",
    ],
    success="every token puts (almost) all its weight on the token before it, whatever the content.",
)


# ----- 5.2 a sliding-window mask -----------------------------------------------------------------
def _band(size: int, low: int, high: int) -> torch.Tensor:
    """True where low <= i - j <= high: (size, size)."""
    i = torch.arange(size)[:, None]  # (size, 1), the query
    j = torch.arange(size)[None, :]  # (1, size), the key
    return (i - j >= low) & (i - j <= high)  # (size, size)


def _test_window_mask(t: Trial, window_mask) -> None:
    size, window = 7, 3
    what = f"window_mask(size={size}, window={window})"
    got = t.call(window_mask, size, window, what="window_mask(size, window)")
    expected = _band(size, 0, window)  # (7, 7)
    if got is None or not isinstance(got, torch.Tensor):
        t.expect_tensor(got, expected, what)  # explains None / wrong type
    t.expect(tuple(got.shape) == (size, size),
             f"{what} has shape {tuple(got.shape)}; expected (size, size) = ({size}, {size}): row i (a query) "
             "says which keys j it may attend to.")
    t.expect(got.dtype == torch.bool,
             f"{what} has dtype {got.dtype}; a mask must be boolean (True = may attend). Build it from "
             "comparisons such as `j <= i` and combine them with &.")
    t.expect(got.device.type == "cpu", f"{what} is on {got.device}; make it on the CPU (the default).")
    if not torch.equal(got, expected):
        known = (
            (~expected, "is inverted: True must mean 'may attend' (the convention of scaled_dot_product_attention)"),
            (_band(size, -window, window), "lets a token see the next tokens too (|i - j| <= window). Only "
             "the past may be seen: add the causal condition j <= i"),
            (_band(size, 0, window - 1), "shows only window - 1 previous tokens: query i must see keys i - window, "
             "..., i - 1 and itself, i.e. 0 <= i - j <= window"),
            (_band(size, 0, window + 1), "shows window + 1 previous tokens, one too many: 0 <= i - j <= window"),
            (_band(size, 1, window), "hides the token itself (the diagonal). A token may always look at itself; "
             "and query 0 would be left with nothing to attend to"),
            (_band(size, 0, size), "is the plain causal mask: it ignores the window, so old tokens stay visible"),
            (_band(size, -window, 0), "looks forward: query i sees keys i .. i + window. The window must look "
             "back, at keys i - window .. i"),
        )
        for wrong, message in known:
            if torch.equal(got, wrong):
                raise Failure(f"{what} {message}.")
        bad = (got != expected).nonzero()
        i, j = (int(n) for n in bad[0])
        raise Failure(f"{what} is wrong at {len(bad)} of {expected.numel()} entries; the first is query {i}, key {j}: "
                      f"got {bool(got[i, j])}, expected {bool(expected[i, j])}.")
    for size, window in ((5, 0), (4, 10), (1, 2), (9, 2)):
        got = t.call(window_mask, size, window, what="window_mask(size, window)")
        expected = _band(size, 0, window)
        t.expect(isinstance(got, torch.Tensor) and got.dtype == torch.bool and tuple(got.shape) == (size, size)
                 and torch.equal(got.cpu(), expected),
                 f"window_mask(size={size}, window={window}) is wrong. It must follow `size` and `window` only"
                 + (" (window=0: each token sees itself only)" if window == 0 else "")
                 + (" (a window longer than the sequence: the causal mask)" if window >= size else "") + ".")


window_mask = Exercise(
    number="5.2",
    title="a sliding window",
    test=_test_window_mask,
    hints=[
        "Row i is the query, column j the key. Query i may attend to key j when j is at most `window` steps "
        "back and not in the future: 0 <= i - j <= window.",
        "`torch.arange(size)[:, None]` is a column of query positions (size, 1), `torch.arange(size)[None, :]` a "
        "row of key positions (1, size); comparing them broadcasts to (size, size) booleans.",
        "offset = torch.arange(size)[:, None] - torch.arange(size)[None, :]  # (size, size): i - j",
    ],
    success="each token sees itself and the `window` tokens before it, and nothing in the future.",
)


# ----- 5.3 the longest sequence that fits -------------------------------------------------------
def _longest(memory_bytes: int, batch_size: int, num_heads: int, bytes_per_number: int) -> int:
    return math.isqrt(memory_bytes // (batch_size * num_heads * bytes_per_number))


def _fits(length: int, memory_bytes: int, batch_size: int, num_heads: int, bytes_per_number: int) -> bool:
    return batch_size * num_heads * length * length * bytes_per_number <= memory_bytes


def _test_longest_sequence(t: Trial, longest_sequence) -> None:
    GiB = 2**30
    cases = (
        (16 * GiB, 1, 1, 4),  # 2^32 numbers: exactly 65536², fits exactly
        (80 * GiB, 8, 32, 2),
        (1000, 2, 3, 4),
        (24 * GiB, 4, 12, 2),
        (3, 1, 1, 4),  # not even one number fits
    )
    for memory, batch, heads, size in cases:
        args = f"memory_bytes={memory}, batch_size={batch}, num_heads={heads}, bytes_per_number={size}"
        what = f"longest_sequence({args})"
        got = t.call(longest_sequence, memory, batch, heads, size, what="longest_sequence")
        expected = _longest(memory, batch, heads, size)
        if got is None:
            raise Failure(f"{what} is None. Did your function forget to `return` its result?")
        if isinstance(got, bool) or isinstance(got, float) or (isinstance(got, torch.Tensor) and got.is_floating_point()):
            raise Failure(f"{what} is {got!r}, not an int. A length counts tokens: round down to a whole "
                          "number (int(...), math.floor or math.isqrt).")
        try:
            got = operator.index(got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got)
        except TypeError:
            raise Failure(f"{what} is a {type(got).__name__}; an int was expected.") from None
        if got == expected:
            continue
        for wrong, message in (
            (math.isqrt(memory // (heads * size)), "forgets the batch: every sequence of the batch has its own "
             "L×L matrices"),
            (math.isqrt(memory // (batch * size)), "forgets the heads: every head has its own L×L matrix"),
            (math.isqrt(memory // (batch * heads)), "forgets the bytes per number: memory counts bytes, and each "
             "weight takes bytes_per_number of them"),
            (memory // (batch * heads * size), "solves B·H·L·bytes <= memory; the matrix has L·L entries, so "
             "take a square root"),
            (math.isqrt(memory // (batch * heads * size * 8)), "counts bits instead of bytes"),
        ):
            if got == wrong and wrong != expected:
                raise Failure(f"{what} is {got}: your count {message}.")
        if got > expected and not _fits(got, memory, batch, heads, size):
            need = batch * heads * got * got * size
            raise Failure(f"{what} is {got}, but that does not fit: B·H·L²·bytes = {need} > {memory}. "
                          "Round down, never up.")
        if got >= 0 and _fits(got + 1, memory, batch, heads, size):
            raise Failure(f"{what} is {got}, but {got + 1} tokens still fit: find the *largest* L with "
                          "B·H·L²·bytes <= memory_bytes.")
        raise Failure(f"{what} is {got}; it must be the largest L with batch_size·num_heads·L²·bytes_per_number "
                      "<= memory_bytes.")


longest_sequence = Exercise(
    number="5.3",
    title="the longest sequence that fits",
    test=_test_longest_sequence,
    hints=[
        "Count first: a batch of B sequences with H heads stores B·H matrices of L×L weights, each weight "
        "bytes_per_number bytes. That must be at most memory_bytes.",
        "Solve B·H·L²·bytes <= memory for L, and round *down* to a whole number of tokens. "
        "`math.isqrt(n)` is the exact integer square root, with no floating-point surprises.",
        "numbers = memory_bytes // (batch_size * num_heads * bytes_per_number)  # weights that fit",
    ],
    success="the L×L weights of longer sequences would not fit: that wall is what lesson 11 removes.",
)
