"""Choosing the next token (lesson 10): greedy, temperature, top-k and top-p (nucleus) sampling.

A language model gives, for the next position, one score (logit) per token of the
vocabulary. How we turn those scores into a token decides what the text reads like:

* **greedy**: always the most likely token (``temperature=0``): safe, often repetitive;
* **temperature** T: sample from ``softmax(logits / T)``; T < 1 sharpens the
  distribution towards the likely tokens, T > 1 flattens it towards the unlikely ones;
* **top-k**: sample only among the k most likely tokens;
* **top-p** (nucleus, Holtzman et al. 2020): sample only among the smallest set of most
  likely tokens whose probabilities add up to at least p; the set is small where the model
  is sure and large where it is not.

The filters return logits with ``-inf`` for every token they rule out, so they compose.
"""

from __future__ import annotations

import torch

from ._validate import require_float, require_min_dims, require_tensor


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (``(..., V)``), set the others to ``-inf``.

    Ties at the k-th value are all kept. ``k >= V`` keeps everything.
    """
    _check_logits(logits)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {k!r}")
    if k >= logits.shape[-1]:
        return logits
    kth_largest = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))  # (..., V)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep, in each row of ``(..., V)`` logits, the smallest set of most likely tokens whose mass reaches ``p``.

    Tokens are taken in order of falling probability until their probabilities add up to
    at least ``p``; the rest get ``-inf``. The most likely token is always kept, and
    ``p = 1`` keeps every token.
    """
    _check_logits(logits)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be a number in (0, 1], got {p!r}")
    probabilities = torch.softmax(logits.float(), dim=-1)  # (..., V)
    sorted_probabilities, order = probabilities.sort(dim=-1, descending=True)  # (..., V) each
    mass_before = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities  # (..., V): mass of the tokens ahead
    drop_sorted = mass_before >= p  # (..., V): the set already reached p without this token
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # (..., V): back in vocabulary order
    return logits.masked_fill(drop, float("-inf"))  # (..., V)


def sample_next_token(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row of ``logits`` ``(B, V)`` → ``(B,)`` long.

    ``temperature=0`` is greedy (the argmax; ``top_k``/``top_p`` change nothing then).
    Otherwise the logits are divided by the temperature, filtered by top-k and then top-p,
    and a token is drawn from the softmax of what is left.
    """
    _check_logits(logits)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}")
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    logits = logits.float() / temperature  # (B, V)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)  # (B, V)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)  # (B, V)
    probabilities = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probabilities, 1, generator=generator)[:, 0]  # (B,)


def _check_logits(logits) -> None:
    require_float(require_tensor(logits, "logits"), "logits")
    require_min_dims(logits, "logits", 1, "(..., V)")
    if logits.shape[-1] == 0:
        raise ValueError("logits must hold at least one token's score (V >= 1), got V = 0")
