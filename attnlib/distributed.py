"""Data parallelism by hand, and what it costs in memory (lesson 14).

Data-parallel training runs one copy of the model in each of ``W`` processes (*ranks*).
Every step each rank takes its own slice of the global batch, computes its gradients,
and then all ranks average their gradients, so that every copy takes the same optimiser
step and the copies stay identical. The pieces, one function each:

* :func:`shard_batch`: rank ``r``'s slice of a global batch, rows ``r·b .. (r+1)·b - 1``;
  the ``W`` slices together are exactly the batch one process would see;
* :func:`broadcast_parameters`: copy rank 0's weights to every rank (what
  ``DistributedDataParallel`` does when it is built);
* :func:`average_gradients`: after ``backward()``, all-reduce every gradient and divide by
  ``W`` (what DDP does, in buckets overlapped with the backward pass);
* :func:`tensor_bytes`, :func:`optimizer_state_bytes`: the memory a rank really holds
  (its own shard of a sharded tensor or optimizer);
* :func:`training_memory`: the bytes per rank of parameters, gradients and Adam's state
  with and without sharding (the arithmetic of ZeRO, Rajbhandari et al. 2020, and FSDP);
* :class:`BucketTimeline`: when DDP's buckets are all-reduced during a backward pass.

The launcher that starts the processes is :mod:`attnlib.launch`; the training script they
run is :mod:`attnlib.ddp_train`.
"""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist
from torch import nn

SHARDING = ("none", "optimizer", "gradients", "parameters")
PRECISIONS = ("fp32", "mixed")
# Bytes per parameter with Adam: (weights, gradients, optimizer state). fp32: 4 + 4 + (4 + 4) for Adam's
# two moments. mixed (bf16/fp16 compute, fp32 master copy): 2 + 2 + (4 master + 4 + 4) = "K = 12" of ZeRO.
_BYTES_PER_PARAMETER = {"fp32": (4, 4, 8), "mixed": (2, 2, 12)}


def shard_batch(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous slice of a global batch: ``(W·b, ...)`` → ``(b, ...)``.

    Rank ``r`` of ``W`` gets rows ``r·b`` to ``(r+1)·b - 1``, so concatenating the slices of
    ranks ``0 .. W-1`` gives back the global batch, in order.
    """
    _check_rank(rank, world_size)
    if not isinstance(batch, torch.Tensor) or batch.dim() < 1:
        got = f"shape {tuple(batch.shape)}" if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise TypeError(f"batch must be a tensor with a batch dimension first, (B, ...), got {got}")
    if batch.shape[0] % world_size:
        raise ValueError(f"a global batch of {batch.shape[0]} rows cannot be split evenly between "
                         f"world_size={world_size} ranks; make it a multiple of {world_size}")
    per_rank = batch.shape[0] // world_size
    return batch[rank * per_rank:(rank + 1) * per_rank]  # (b, ...)


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Overwrite every rank's parameters and buffers with rank ``src``'s (a collective: every rank calls it)."""
    _require_module(model, "broadcast_parameters")
    _require_process_group("broadcast_parameters")
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor, src)


def average_gradients(model: nn.Module) -> None:
    """Data parallelism by hand: after ``backward()``, make every gradient the mean over all ranks.

    Each rank holds the gradient of the mean loss over *its* slice of the batch. Summing
    the ``W`` gradients with one all-reduce and dividing by ``W`` gives every rank the
    gradient of the mean loss over the whole global batch (for equal slices). A collective:
    every rank must call it, with the same parameters in the same order.
    """
    _require_module(model, "average_gradients")
    _require_process_group("average_gradients")
    world_size = dist.get_world_size()
    for parameter in model.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)  # every rank now holds the sum
            parameter.grad.div_(world_size)  # the sum → the mean


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor`` held by this process: for a sharded ``DTensor``, its local shard only."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor_bytes takes a torch.Tensor, got {type(tensor).__name__}")
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor (FSDP) → this rank's shard
    return local.numel() * local.element_size()


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state (e.g. Adam's two moments and step counters) held by this process.

    For :class:`torch.distributed.optim.ZeroRedundancyOptimizer`, the state of the shard of
    parameters that this rank updates; for FSDP's sharded parameters, the local shards.
    The state exists after the first ``step()``.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    local = getattr(optimizer, "optim", optimizer)  # ZeroRedundancyOptimizer wraps this rank's local optimizer
    return sum(tensor_bytes(value) for state in local.state.values() for value in state.values()
               if isinstance(value, torch.Tensor))


def training_memory(num_parameters: int, world_size: int = 1, *, sharding: str = "none",
                    precision: str = "fp32") -> dict[str, float]:
    """Bytes per rank of weights, gradients and Adam's optimizer state (activations not included).

    ``sharding``: what is split evenly between the ``world_size`` ranks, in ZeRO's stages:
    ``"none"`` (DDP: every rank holds everything), ``"optimizer"`` (ZeRO-1), ``"gradients"``
    (ZeRO-2: optimizer state and gradients), ``"parameters"`` (ZeRO-3 / FSDP: all three).
    ``precision``: ``"fp32"`` (4 + 4 + 8 bytes per parameter) or ``"mixed"`` (bf16/fp16
    weights and gradients, an fp32 master copy in the optimizer: 2 + 2 + 12). Returns
    ``{"parameters", "gradients", "optimizer", "total"}`` in bytes.
    """
    if isinstance(num_parameters, bool) or not isinstance(num_parameters, int) or num_parameters < 1:
        raise ValueError(f"num_parameters must be a positive int, got {num_parameters!r}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if sharding not in SHARDING:
        raise ValueError(f"sharding must be one of {SHARDING}, got {sharding!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    stage = SHARDING.index(sharding)  # 0: nothing sharded .. 3: everything sharded
    weights, gradients, optimizer = _BYTES_PER_PARAMETER[precision]
    memory = {
        "parameters": weights * num_parameters / (world_size if stage >= 3 else 1),
        "gradients": gradients * num_parameters / (world_size if stage >= 2 else 1),
        "optimizer": optimizer * num_parameters / (world_size if stage >= 1 else 1),
    }
    memory["total"] = math.fsum(memory.values())
    return memory


def _check_rank(rank, world_size) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")


def _require_module(model, name: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} takes the model (a torch.nn.Module), got {type(model).__name__}")


def _require_process_group(name: str) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{name} is a collective: it needs torch.distributed.init_process_group() to have run "
                           "in every process first (torchrun starts the processes; see attnlib.launch)")


class BucketTimeline:
    """Times one backward pass of a ``DistributedDataParallel`` model: when each gradient is ready, and
    when each bucket's all-reduce starts and ends (what DDP adds: buckets overlapped with the backward pass).

    ``BucketTimeline(model, ddp_model)`` hooks every parameter of ``model`` and installs a comm hook on
    ``ddp_model`` that runs DDP's own all-reduce (divide by ``W``, then sum) with a stopwatch. Call
    :meth:`backward` instead of ``loss.backward()``; with ``record=True`` it keeps that pass's times:
    ``ready`` (seconds after the pass began, one per gradient), ``buckets`` (``(index, tensors, start,
    end)`` per bucket) and ``seconds`` (until ``backward()`` returned).
    """

    def __init__(self, model: nn.Module, ddp_model: nn.Module):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        if not isinstance(model, nn.Module) or not hasattr(ddp_model, "register_comm_hook"):
            raise TypeError("BucketTimeline(model, ddp_model) takes the model and the DistributedDataParallel that "
                            f"wraps it, got {type(model).__name__} and {type(ddp_model).__name__}")
        self.recording, self.start, self.ready, self.buckets, self.seconds = False, 0.0, [], [], 0.0
        for parameter in model.parameters():
            parameter.register_post_accumulate_grad_hook(self._gradient_ready)

        def timed_allreduce(state, bucket):
            began, index, size = time.perf_counter(), bucket.index(), len(bucket.parameters())

            def done(future):
                if self.recording:
                    self.buckets.append((index, size, began - self.start, time.perf_counter() - self.start))
                return future.value()

            return default_hooks.allreduce_hook(None, bucket).then(done)

        ddp_model.register_comm_hook(None, timed_allreduce)

    def _gradient_ready(self, parameter) -> None:
        if self.recording:
            self.ready.append(time.perf_counter() - self.start)

    def backward(self, loss: torch.Tensor, record: bool = True) -> None:
        """``loss.backward()``, timed if ``record``."""
        self.recording, self.ready, self.buckets, self.start = record, [], [], time.perf_counter()
        try:
            loss.backward()
        finally:
            self.seconds, self.recording = time.perf_counter() - self.start, False

    def report(self) -> dict:
        return {"gradients_ready": list(self.ready), "buckets": list(self.buckets), "backward_seconds": self.seconds}
