"""Measuring what a computation costs (lesson 11): its time, and the memory its tensors take.

Speed claims must survive a busy laptop, so timings here are **medians of repeats**, and
comparisons run the contestants **interleaved** (a, b, a, b, ...) so that a slow moment of
the machine hits both alike; a ratio is the median of the per-round ratios.

Memory is watched operation by operation: :func:`memory_used` runs a function under a
``TorchDispatchMode`` that sees every tensor each torch operation returns, on any device.
It reports the largest single tensor created and the peak of the bytes held by the tensors
created and still alive (what the computation adds to memory), so "the score matrix is
O(L²)" becomes a number. Scratch memory a kernel allocates inside itself (e.g. a fused
kernel's tiles) is not a tensor and is not seen; on CUDA the caching allocator's own peak,
which does include it, is reported as well.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (CUDA and MPS run asynchronously); nothing on a CPU."""
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def seconds(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1, device=None,
            clock: str = "wall") -> float:
    """The median time of ``repeats`` calls of ``fn()`` after ``warmup`` calls, in seconds.

    ``clock="wall"`` measures elapsed time; ``clock="cpu"`` the CPU time this process used
    (``time.process_time``): with one thread, the work itself, hardly changed when other
    programs load the machine (on a GPU, use the wall clock).
    """
    _check_counts(repeats, warmup)
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        times.append(_timed(fn, device, time.process_time if clock == "cpu" else time.perf_counter))
    return statistics.median(times)


@dataclass
class Comparison:
    """Medians of two functions timed in alternation: ``ratio`` = median over rounds of time(a) / time(b)."""

    seconds_a: float
    seconds_b: float
    ratio: float


def compare(fn_a: Callable[[], object], fn_b: Callable[[], object], *, repeats: int = 7, warmup: int = 1,
            device=None) -> Comparison:
    """Time ``fn_a`` and ``fn_b`` in alternating rounds; ``ratio`` > 1 means ``fn_a`` is slower."""
    _check_counts(repeats, warmup)
    for _ in range(warmup):
        fn_a()
        fn_b()
    times_a, times_b = [], []
    for round_ in range(repeats):
        order = ((fn_a, times_a), (fn_b, times_b)) if round_ % 2 == 0 else ((fn_b, times_b), (fn_a, times_a))
        for fn, times in order:  # who goes first alternates too: neither always runs on a warm cache
            times.append(_timed(fn, device))
    ratios = [a / b for a, b in zip(times_a, times_b) if b > 0]
    return Comparison(statistics.median(times_a), statistics.median(times_b),
                      statistics.median(ratios) if ratios else float("inf"))


def _timed(fn, device, clock=time.perf_counter) -> float:
    synchronize(device)
    start = clock()
    fn()
    synchronize(device)
    return clock() - start


@dataclass
class MemoryUse:
    """What :func:`memory_used` saw, in bytes.

    ``peak_bytes``: the most bytes held at once by tensors the call created; ``largest_bytes``:
    the largest one of them; ``allocator_peak_bytes``: on CUDA, the caching allocator's peak
    above what was allocated before the call (kernels' scratch memory included), else None.
    ``operations``: the names of the torch operations that ran, in order.
    """

    peak_bytes: int
    largest_bytes: int
    allocator_peak_bytes: int | None
    operations: list[str]


class _TensorWatch(TorchDispatchMode):
    """Sees every tensor a torch operation returns; keeps the bytes of the storages still alive."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage address -> [tensors alive on it, bytes]
        self.current = self.peak = self.largest = 0
        self.operations: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.operations.append(str(func.overloadpacket.__name__))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and not t.is_meta}
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and not tensor.is_meta:
                self._track(tensor, inputs)
        return out

    def _track(self, tensor: torch.Tensor, inputs: set[int]) -> None:
        storage = tensor.untyped_storage()
        address, size = storage.data_ptr(), storage.nbytes()
        if address == 0 or size == 0:
            return
        if address in self.live:
            self.live[address][0] += 1  # another view of a storage this call made
        elif address in inputs:
            return  # a view (or in-place result) of memory that existed before: nothing new
        else:
            self.live[address] = [1, size]
            self.current += size
            self.peak = max(self.peak, self.current)
            self.largest = max(self.largest, size)
        weakref.finalize(tensor, self._release, address)

    def _release(self, address: int) -> None:
        entry = self.live.get(address)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.live[address]


def memory_used(fn: Callable[[], object], *, device=None) -> MemoryUse:
    """Run ``fn()`` once and report the memory its tensors took (see :class:`MemoryUse`).

    The result of ``fn`` is dropped before the peak is read, so what it returns counts
    while it was being computed, like everything else. Run it under ``torch.no_grad()``
    to measure a forward pass alone (autograd keeps intermediates for the backward).
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function of no arguments, got {type(fn).__name__}")
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    watch = _TensorWatch()
    with watch:
        result = fn()
    del result
    allocator_peak = None
    if cuda:
        synchronize(device)
        allocator_peak = torch.cuda.max_memory_allocated(device) - before
    return MemoryUse(watch.peak, watch.largest, allocator_peak, watch.operations)


def _check_counts(repeats, warmup) -> None:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
