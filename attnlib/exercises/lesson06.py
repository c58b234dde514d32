"""Exercises of lesson 06 (multi-head attention).

6.1 ``merge_heads``: (B, H, L, d_head) -> (B, L, H·d_head), written from its shape contract alone.
6.2 ``mha_parameter_count``: the parameters of ``torch.nn.MultiheadAttention`` whose keys and values come
    from inputs of other widths (``kdim``, ``vdim``), checked against the real module.
6.3 ``cross_attention_flops``: the FLOPs of multi-head cross-attention with Lq ≠ Lk, checked against
    torch's own FLOP counter running the real module.

Each checker first looks for the classic mistakes (a reshape that scrambles the heads, a count that
multiplies by the number of heads or forgets a projection, Lq and Lk mixed up) and names them.
"""

from __future__ import annotations


import torch
from torch import nn

from ._core import Exercise, Failure, Trial, close, comparable, whole_number


# ----- 6.1 merge heads -----------------------------------------------------------------------
def _merge(x: torch.Tensor) -> torch.Tensor:
    batch, heads, length, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * d_head)  # (B, L, H·d_head)


def _call(t: Trial, merge_heads, x):
    """``t.call``, with a tip for the classic exception of this exercise."""
    try:
        return t.call(merge_heads, x, what="merge_heads(x)")
    except Failure as failure:
        if "view size is not compatible" in str(failure):
            raise Failure(f"{failure}\n  Tip: after a transpose the numbers are no longer laid out in memory in the "
                          "new order, so `view` cannot flatten them; `reshape` can (it copies when it must).") from None
        raise


def _test_merge_heads(t: Trial, merge_heads) -> None:
    from ..multi_head import split_heads

    B, H, L, d_head = 2, 3, 4, 5  # all different, so a swapped axis cannot slip through
    x = t.randn(B, H, L, d_head)  # (B, H, L, d_head)
    what = f"merge_heads(x) for x of shape (B, H, L, d_head) = {(B, H, L, d_head)}"
    got = _call(t, merge_heads, x)
    expected = _merge(x)  # (B, L, H·d_head)
    if got is not None and isinstance(got, torch.Tensor):
        shape = tuple(got.shape)
        if shape == (B, L, d_head):
            raise Failure(f"{what} has shape {shape}: the heads were added or averaged. Merging puts them side "
                          f"by side: the result has H·d_head = {H * d_head} features.")
        if shape == (B, L, H, d_head):
            raise Failure(f"{what} has shape {shape}; flatten the last two dimensions into one of H·d_head = "
                          f"{H * d_head} features.")
        if shape == (B, H * d_head, L) or shape == (B, H, L * d_head):
            raise Failure(f"{what} has shape {shape}; expected (B, L, H·d_head) = {(B, L, H * d_head)}: one row of "
                          "features per position, with the heads' features side by side.")
    if comparable(got, expected) and not close(got, expected):
        mistakes = (
            (x.reshape(B, L, H * d_head), "reshapes without first moving the head axis next to d_head: the result "
             "has the right shape but mixes positions and heads. Swap the H and L axes (transpose(1, 2)) first"),
            (x.permute(0, 2, 3, 1).reshape(B, L, H * d_head), "interleaves the heads' features (feature i of head 0, "
             "feature i of head 1, ...). Head h must own the block of features h·d_head .. (h+1)·d_head - 1: "
             "order the axes (B, L, H, d_head) before flattening, not (B, L, d_head, H)"),
            (x.flip(1).transpose(1, 2).reshape(B, L, H * d_head), "puts the heads in reverse order: head 0's "
             "features come first"),
        )
        for wrong, message in mistakes:
            if close(got, wrong):
                raise Failure(f"{what} {message}.")
    t.expect_tensor(got, expected, what)

    y = t.randn(3, 2, 12)  # (B, L, d_model)
    for heads in (1, 4):
        what = f"merge_heads(split_heads(y, {heads})) for y of shape (3, 2, 12)"
        got = _call(t, merge_heads, split_heads(y, heads))
        t.expect_tensor(got, y, what + ": merging must undo attnlib's split_heads exactly")


merge_heads = Exercise(
    number="6.1",
    title="merge heads",
    test=_test_merge_heads,
    hints=[
        "Read the contract backwards from the result: (B, L, H·d_head) is a (B, L, H, d_head) tensor whose last "
        "two axes are flattened, head 0's d_head features first. So first get the axes in the order "
        "(B, L, H, d_head), then flatten.",
        "Reordering axes: `x.transpose(1, 2)` swaps H and L. Flattening: `reshape(B, L, H * d_head)`. A `view` "
        "fails after a transpose (the memory is no longer in that order); `reshape` copies when it must.",
        "x = x.transpose(1, 2)  # (B, H, L, d_head) -> (B, L, H, d_head)",
    ],
    success="the heads' outputs side by side, head 0 first; it undoes split_heads exactly.",
)


# ----- 6.2 parameters of nn.MultiheadAttention with kdim and vdim -------------------------------
def _real_count(embed_dim, num_heads, kdim, vdim, bias) -> int:
    module = nn.MultiheadAttention(embed_dim, num_heads, kdim=kdim, vdim=vdim, bias=bias, device="meta")
    return sum(p.numel() for p in module.parameters())


def _test_parameter_count(t: Trial, mha_parameter_count) -> None:
    configs = ((16, 4, 6, 12, True), (16, 4, 6, 12, False), (512, 8, 768, 1024, True), (64, 2, 64, 64, True),
               (96, 3, 40, 24, False))
    for E, H, kdim, vdim, bias in configs:
        what = f"mha_parameter_count(embed_dim={E}, num_heads={H}, kdim={kdim}, vdim={vdim}, bias={bias})"
        got = whole_number(t.call(mha_parameter_count, E, H, kdim, vdim, bias, what="mha_parameter_count"), what)
        expected = _real_count(E, H, kdim, vdim, bias)
        if got == expected:
            continue
        biases = 4 * E if bias else 0
        mistakes = (
            (4 * E * E + biases, "treats the keys' and values' inputs as embed_dim wide; with kdim and vdim, "
             "W_K maps kdim features to embed_dim and W_V maps vdim features to embed_dim"),
            (E * E + E * kdim + E * vdim + biases, "forgets the output projection W_O (embed_dim × embed_dim)"),
            (E * E + kdim * kdim + vdim * vdim + E * E + biases, "makes W_K and W_V square; they map kdim and "
             "vdim features to embed_dim (the attention compares queries and keys of the same width)"),
            (2 * E * E + E * kdim + E * vdim, "forgets the biases"),
            (2 * E * E + E * kdim + E * vdim + (E + kdim + vdim + E if bias else 0), "gives the biases the input "
             "widths; every bias has one entry per output feature, and every projection outputs embed_dim"),
            (2 * E * E + E * kdim + E * vdim + (3 * E if bias else 0), "forgets the output projection's bias"),
            (H * (2 * E * E + E * kdim + E * vdim) + biases, "multiplies the weights by the number of heads; the "
             "heads share the projections, each owning a slice of their outputs"),
            (H * (2 * E * E + E * kdim + E * vdim + biases), "multiplies by the number of heads; the heads share "
             "the projections, each owning a slice of their outputs"),
        )
        for wrong, message in mistakes:
            if got == wrong and wrong != expected:
                raise Failure(f"{what} is {got}: your count {message}.")
        raise Failure(f"{what} is {got}, which is off by {got - expected:+d} from the real module's count. Count "
                      "each weight matrix (out × in) and each bias (out).")


mha_parameter_count = Exercise(
    number="6.2",
    title="parameters with kdim and vdim",
    test=_test_parameter_count,
    hints=[
        "Four projections, whatever the number of heads: W_Q, W_K, W_V and W_O. Every one of them outputs "
        "embed_dim features (the heads split those outputs, they do not multiply them).",
        "What changes is the input width: W_Q reads embed_dim features, W_K reads kdim, W_V reads vdim, W_O reads "
        "the merged heads (embed_dim). A weight matrix has out × in entries; a bias has out entries.",
        "weights = embed_dim * embed_dim + embed_dim * kdim + embed_dim * vdim + embed_dim * embed_dim",
    ],
    success="the count of torch's own module: and the number of heads did not enter it.",
)


# ----- 6.3 FLOPs of cross-attention ------------------------------------------------------------
def _real_flops(batch, len_q, len_k, d_model, num_heads) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from ..multi_head import MultiHeadAttention

    with torch.device("meta"):  # shapes only: nothing is computed, and no random numbers are drawn
        module = MultiHeadAttention(d_model, num_heads)
    queries = torch.empty(batch, len_q, d_model, device="meta")  # (B, Lq, d_model)
    memory = torch.empty(batch, len_k, d_model, device="meta")  # (B, Lk, d_model)
    with FlopCounterMode(display=False) as counter:
        module(queries, memory, return_weights=True)  # the readable path: every matrix product is counted
    return counter.get_total_flops()


def _test_cross_attention_flops(t: Trial, cross_attention_flops) -> None:
    configs = ((3, 2, 7, 16, 4), (1, 5, 5, 8, 2), (4, 10, 64, 32, 8), (3, 1, 9, 24, 3), (8, 128, 512, 256, 8))
    for B, Lq, Lk, d, H in configs:
        what = f"cross_attention_flops(batch={B}, len_q={Lq}, len_k={Lk}, d_model={d}, num_heads={H})"
        got = whole_number(t.call(cross_attention_flops, B, Lq, Lk, d, H, what="cross_attention_flops"), what)
        expected = _real_flops(B, Lq, Lk, d, H)
        if got == expected:
            continue
        quadratic = 4 * B * Lq * Lk * d
        mistakes = (
            (expected // 2, "counts multiply-adds; a multiply and an add are two FLOPs, as FlopCounterMode counts"),
            (8 * B * Lq * d * d + 4 * B * Lq * Lq * d, "is the self-attention count with L = len_q; here the keys "
             "and values come from len_k positions of memory"),
            (8 * B * Lk * d * d + 4 * B * Lk * Lk * d, "is the self-attention count with L = len_k; the queries and "
             "the output come from len_q positions"),
            (2 * B * Lq * d * d + 4 * B * Lk * d * d + quadratic, "forgets the output projection W_O"),
            (expected // B, "forgets the batch: every sequence of the batch costs the same again"),
            (H * expected, "multiplies everything by the number of heads; the heads split d_model between them"),
            (4 * B * Lq * d * d + 4 * B * Lk * d * d + H * quadratic, "multiplies the attention part by the number "
             "of heads; each head works on d_head = d_model / H features, so the heads together cost what one "
             "full-width head would"),
            (4 * B * Lq * d * d + 4 * B * Lk * d * d + quadratic // 2, "counts only one of the two L_q×L_k matrix "
             "products: the scores Q Kᵀ *and* the weighted sum of the values"),
        )
        for wrong, message in mistakes:
            if got == wrong and wrong != expected:
                raise Failure(f"{what} is {got}: your count {message}.")
        raise Failure(f"{what} is {got}, which is off by {got - expected:+d} from what torch's FLOP counter counts "
                      "on the real module. List the five matrix products and the shape of each.")


cross_attention_flops = Exercise(
    number="6.3",
    title="FLOPs of cross-attention",
    test=_test_cross_attention_flops,
    hints=[
        "List the matrix products and who feeds each: Q = queries W_Q (len_q rows), K = memory W_K and "
        "V = memory W_V (len_k rows each), the scores Q Kᵀ, the weighted sum of V, and the output projection "
        "(len_q rows). A product (m × n) @ (n × p) costs 2·m·n·p FLOPs.",
        "Per head the scores cost 2·len_q·len_k·d_head and the weighted sum as much; times H heads that is "
        "d_model, not d_head. num_heads changes nothing in the total: it is there to tempt you.",
        "attention = 2 * (2 * batch * len_q * len_k * d_model)  # scores and weighted sum, all heads together",
    ],
    success="exactly what torch's FLOP counter measures on the real module, for any number of heads.",
)
