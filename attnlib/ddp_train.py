"""``python -m attnlib.ddp_train``: lesson 10's GPT, trained data-parallel on several processes (lesson 14).

Start it with torchrun, one process per rank (:func:`attnlib.launch.launch` does that on this
machine)::

    torchrun --nproc-per-node 2 -m attnlib.ddp_train --out results.json --strategies manual,ddp,zero

**The data.** Every rank draws the *same* global batch of ``W·b`` random windows of the
standard library's source (one seeded :func:`attnlib.data.random_windows` stream) and keeps
its own slice, rows ``r·b .. (r+1)·b - 1`` (:func:`attnlib.distributed.shard_batch`). So the
``W`` ranks together see exactly what one process with batch ``W·b`` sees, step for step.

**The strategies** (``--strategies``, run one after another, each from the same seeded weights):

* ``manual``: plain model, weights broadcast from rank 0, gradients averaged by hand after
  ``backward()`` (:func:`attnlib.distributed.average_gradients`);
* ``ddp``: ``DistributedDataParallel`` (buckets of gradients all-reduced during the backward pass);
* ``zero``: DDP with ``ZeroRedundancyOptimizer``: each rank keeps Adam's state for its shard only;
* ``fsdp``: ``fully_shard`` on every block and the model: weights, gradients and optimizer state sharded.

``name:N`` runs a strategy for its first ``N`` steps only (``--strategies manual:50,ddp``).

Rank 0 writes ``--out`` (JSON): per strategy the mean loss over all ranks at every step, the
seconds, and every rank's optimizer-state and parameter bytes. ``--checkpoint PATH --save-at S``
saves with :func:`attnlib.train.save_checkpoint` (rank 0 writes) after step ``S`` of the ``ddp`` run
(or of the only strategy, if it is not ``fsdp``); ``--resume PATH``
continues from such a checkpoint. ``--crash-rank R --crash-step S`` makes rank R fail at step S;
``--hang-rank`` makes it stall instead, which ``--timeout`` (the process group's, in seconds) ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from . import distributed
from .data.text import CharTokenizer, python_source_corpus, random_windows, split_by_position
from .gpt import GPT
from .train.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

STRATEGIES = ("manual", "ddp", "zero", "fsdp")


@dataclasses.dataclass(frozen=True)
class Config:
    """The run: model size, per-rank batch ``batch_size``, steps, Adam's learning rate, the seed."""

    steps: int = 300
    batch_size: int = 8
    block_size: int = 32
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 32
    lr: float = 3e-3
    seed: int = 0
    corpus_chars: int = 200_000

    def args(self) -> list[str]:
        """The command-line flags that give this config, e.g. ``["--steps", "300", ...]``."""
        return [text for f in dataclasses.fields(self)
                for text in (f"--{f.name.replace('_', '-')}", str(getattr(self, f.name)))]


def load_tokens(config: Config) -> tuple[torch.Tensor, int]:
    """The training tokens ``(N,)`` of the corpus (the first 90 %) and the vocabulary size."""
    text = python_source_corpus(config.corpus_chars)
    tokenizer = CharTokenizer(text)
    train_tokens, _ = split_by_position(tokenizer.encode(text), 0.9)  # (N,)
    return train_tokens, tokenizer.vocab_size


def build_model(config: Config, vocab_size: int) -> GPT:
    """Lesson 10's GPT with the seeded initial weights every rank (and the one-process run) starts from."""
    torch.manual_seed(config.seed)
    return GPT(vocab_size, config.block_size, config.n_layer, config.n_head, config.d_model, dropout=0.0)


def global_batches(tokens: torch.Tensor, config: Config, global_batch: int):
    """The stream of global batches ``(x, y)``, each ``(global_batch, block_size)``: the same on every rank."""
    return random_windows(tokens, config.block_size, global_batch, seed=config.seed, batches_per_epoch=config.steps)()


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch 2.5 kept it under its earlier name
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


def fsdp_available() -> bool:
    """True when this torch has FSDP's ``fully_shard`` (the ``fsdp`` strategy)."""
    try:
        _fully_shard()
    except ImportError:
        return False
    return True


def _wrap(strategy: str, model: torch.nn.Module, device: torch.device, lr: float, bucket_cap_mb: float | None):
    """The model each strategy trains (what forward is called on) and the optimizer it steps."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    if strategy == "manual":
        distributed.broadcast_parameters(model)  # every rank starts from rank 0's weights, as DDP does
        return model, torch.optim.Adam(model.parameters(), lr=lr)
    if strategy in ("ddp", "zero"):
        wrapped = DistributedDataParallel(model, device_ids=ids, bucket_cap_mb=bucket_cap_mb)
        if strategy == "ddp":
            return wrapped, torch.optim.Adam(model.parameters(), lr=lr)
        from torch.distributed.optim import ZeroRedundancyOptimizer  # (imported only when used: it is slow)

        return wrapped, ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.Adam, lr=lr,
                                                parameters_as_bucket_view=True)  # one broadcast per shard
    fully_shard = _fully_shard()
    for block in model.blocks:
        fully_shard(block)  # each block's weights: gathered just before its forward/backward, then freed
    fully_shard(model)  # the rest: embeddings (tied with the output layer) and the final norm
    return model, torch.optim.Adam(model.parameters(), lr=lr)


def train(strategy: str, config: Config, tokens: torch.Tensor, vocab_size: int, device: torch.device, *,
          resume: str | None = None, checkpoint: str | None = None, save_at: int | None = None,
          crash: tuple[int, int] | None = None, hang: tuple[int, int] | None = None,
          bucket_cap_mb: float | None = None, snapshot_at=()) -> dict:
    """Train on this rank with ``strategy`` for ``config.steps`` steps; return what it measured.

    The report holds the mean loss over all ranks at every step, the seconds, every rank's
    optimizer-state and parameter bytes, and the full weights after each step in ``snapshot_at``.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build_model(config, vocab_size).to(device)
    wrapped, optimizer = _wrap(strategy, model, device, config.lr, bucket_cap_mb)
    timeline = distributed.BucketTimeline(model, wrapped) if strategy == "ddp" and bucket_cap_mb else None
    start = 0
    if resume is not None:
        extra = load_checkpoint(resume, model, optimizer)
        _check_resumable(extra, config, world, resume)
        start = extra["step"]
    batches = global_batches(tokens, config, config.batch_size * world)
    for _ in range(start):  # the data stream is a pure function of the seed: skip what was already seen
        next(batches)
    losses, snapshots, began = [], {}, time.perf_counter()
    for step in range(start + 1, config.steps + 1):
        x, y = (distributed.shard_batch(t, rank, world).to(device) for t in next(batches))  # (b, T) each
        if crash is not None and (rank, step) == crash:
            print(f"rank {rank} crashes at step {step}, time {time.time():.3f}", flush=True)
            raise RuntimeError(f"simulated crash of rank {rank} at step {step}")
        if hang is not None and (rank, step) == hang:
            time.sleep(3600)  # a stalled rank: the others wait in the all-reduce until the group's timeout
        optimizer.zero_grad(set_to_none=True)
        _, loss = wrapped(x, y)  # (b, T) → the mean loss over this rank's b·T predictions
        if timeline is not None:  # DDP with small buckets: time the last step's backward pass
            timeline.backward(loss, record=step == config.steps)
        else:
            loss.backward()
        if strategy == "manual":
            distributed.average_gradients(model)
        optimizer.step()
        losses.append(loss.item())
        if checkpoint is not None and step == save_at:
            _save(checkpoint, model, optimizer, step, config, world, strategy)
        if step in snapshot_at or step == config.steps:  # (a collective for FSDP: every rank takes part)
            snapshots[step] = torch.cat([_full(p).detach().double().flatten().cpu() for p in model.parameters()])
    seconds = time.perf_counter() - began
    mean = torch.tensor(losses, dtype=torch.float64)  # (steps,): this rank's losses
    dist.all_reduce(mean)
    report = {"first_step": start + 1, "losses": (mean / world).tolist(), "seconds": seconds,
              "optimizer_state_bytes": _gather(distributed.optimizer_state_bytes(optimizer)),
              "parameter_bytes": _gather(sum(distributed.tensor_bytes(p) for p in model.parameters())),
              "num_parameters": sum(_full(p).numel() for p in model.parameters()), "snapshots": snapshots}
    if timeline is not None:
        report["timeline"] = timeline.report()
    return report


def _full(parameter: torch.Tensor) -> torch.Tensor:
    return parameter.full_tensor() if hasattr(parameter, "full_tensor") else parameter  # DTensor: gathered


def _gather(value: int) -> list[int]:
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def _save(path, model, optimizer, step, config, world, strategy) -> None:
    if hasattr(optimizer, "consolidate_state_dict"):
        optimizer.consolidate_state_dict(to=0)  # ZeRO: gather every rank's shard of Adam's state on rank 0
    if dist.get_rank() == 0:  # one writer; the file is replaced atomically
        save_checkpoint(path, model, optimizer, step=step, config=dataclasses.asdict(config),
                        global_batch=config.batch_size * world, strategy=strategy)
    dist.barrier()  # nobody goes on (or reads the file) before it is complete


def _check_resumable(extra: dict, config: Config, world: int, path: str) -> None:
    saved = {k: v for k, v in extra.get("config", {}).items() if k != "steps"}
    ours = {k: v for k, v in dataclasses.asdict(config).items() if k != "steps"}
    if saved != ours or extra.get("global_batch") != config.batch_size * world:
        raise CheckpointError(f"{path} was written by a run with config {saved} and global batch "
                              f"{extra.get('global_batch')}; this run has {ours} and global batch "
                              f"{config.batch_size * world}, so it would not continue the same curve")
    if not 0 < extra["step"] < config.steps:
        raise CheckpointError(f"{path} was saved after step {extra['step']}; this run has only {config.steps} steps")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m attnlib.ddp_train", description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Config):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    parser.add_argument("--out", required=True, help="the JSON file rank 0 writes")
    parser.add_argument("--strategies", default="ddp", help=f"comma-separated, from {', '.join(STRATEGIES)}; "
                        "name:N runs that one for N steps only")
    parser.add_argument("--backend", default="gloo", choices=("gloo", "nccl"))
    parser.add_argument("--bucket-cap-mb", type=float, help="DDP's bucket size; given, DDP's last step is timed")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a collective may wait for a rank")
    parser.add_argument("--checkpoint"), parser.add_argument("--save-at", type=int)
    parser.add_argument("--resume")
    for name in ("crash", "hang"):
        parser.add_argument(f"--{name}-rank", type=int), parser.add_argument(f"--{name}-step", type=int)
    args = parser.parse_args(argv)
    plan = {}
    for item in args.strategies.split(","):
        name, _, steps = item.partition(":")
        if name not in STRATEGIES or (steps and not (steps.isdigit() and int(steps) > 0)) or name in plan:
            parser.error(f"--strategies: {item!r} is not one of {STRATEGIES}, optionally with ':steps', used once")
        plan[name] = int(steps) if steps else args.steps
    args.strategies = plan
    args.saver = "ddp" if "ddp" in plan else next(iter(plan))  # the one run that writes --checkpoint
    if args.checkpoint is not None and args.saver == "fsdp":
        parser.error("--checkpoint: an FSDP model's weights are sharded; save it with torch.distributed.checkpoint "
                     "(attnlib's checkpoints are for the manual, ddp and zero strategies)")
    if (args.checkpoint is None) != (args.save_at is None):
        parser.error("--checkpoint and --save-at go together")
    return args


@record  # a failing rank's traceback goes to torchrun's report, which names the rank
def main(argv=None) -> None:
    args = parse_args(argv)
    config = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})
    if "RANK" not in os.environ:
        raise SystemExit("start this script with torchrun (or attnlib.launch.launch), which gives each process "
                         "its RANK and WORLD_SIZE")
    device = torch.device("cpu")
    if args.backend == "nccl":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group(args.backend, timeout=timedelta(seconds=args.timeout))
    try:
        tokens, vocab_size = load_tokens(config)
        pick = lambda name: None if getattr(args, f"{name}_rank") is None else (  # noqa: E731
            getattr(args, f"{name}_rank"), getattr(args, f"{name}_step"))
        runs = {}
        for strategy, steps in args.strategies.items():
            runs[strategy] = train(strategy, dataclasses.replace(config, steps=steps), tokens, vocab_size, device,
                                   resume=args.resume, save_at=args.save_at,
                                   checkpoint=args.checkpoint if strategy == args.saver else None,
                                   crash=pick("crash"), hang=pick("hang"), bucket_cap_mb=args.bucket_cap_mb,
                                   snapshot_at=set(args.strategies.values()))
        reference = runs.get("ddp", next(iter(runs.values())))["snapshots"]  # DDP's weights, after the same steps
        for run in runs.values():
            snapshots, last = run.pop("snapshots"), len(run["losses"]) + run["first_step"] - 1
            run["max_weight_difference"] = (snapshots[last] - reference[last]).abs().max().item() \
                if last in reference else None
        if dist.get_rank() == 0:
            _write(args.out, {"world_size": dist.get_world_size(), "backend": args.backend,
                              "config": dataclasses.asdict(config), "runs": runs})
            for name, run in runs.items():
                print(f"{name}: steps {run['first_step']}..{args.strategies[name]} in {run['seconds']:.1f} s, "
                      f"final loss {run['losses'][-1]:.4f}", flush=True)
    finally:
        dist.destroy_process_group()


def _write(path: str, results: dict) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as file:
        json.dump(results, file)
    os.replace(temporary, path)


if __name__ == "__main__":
    main()
