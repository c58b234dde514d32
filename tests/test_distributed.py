"""attnlib.distributed, attnlib.launch and attnlib.ddp_train: data parallelism on real processes.

The tests that start processes run ``python -m attnlib.ddp_train`` under torchrun on 2 CPU
processes with gloo, at a tiny size, on 127.0.0.1 only, each with a timeout; every process
they start is gone when they end.
"""

import json
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

from attnlib import ddp_train, distributed, launch, train
from attnlib.launch import DistributedRunError

TINY = ddp_train.Config(steps=6, batch_size=4, block_size=16, n_layer=1, n_head=2, d_model=16, corpus_chars=20_000)
WORLD = 2


# ----- shard_batch ------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 4])
def test_the_shards_of_the_ranks_are_the_global_batch_in_order(world):
    batch = torch.arange(8 * 3).reshape(8, 3)  # (8, 3)
    shards = [distributed.shard_batch(batch, r, world) for r in range(world)]
    assert all(s.shape == (8 // world, 3) for s in shards)
    torch.testing.assert_close(torch.cat(shards), batch)


@pytest.mark.parametrize("call, error, message", [
    (lambda: distributed.shard_batch(torch.zeros(6, 2), 0, 4), ValueError, "cannot be split evenly between world_size=4"),
    (lambda: distributed.shard_batch(torch.zeros(4, 2), 2, 2), ValueError, "rank must be an int in [0, world_size=2)"),
    (lambda: distributed.shard_batch(torch.zeros(4, 2), True, 2), ValueError, "rank must be an int"),
    (lambda: distributed.shard_batch(torch.zeros(4, 2), 0, 0), ValueError, "world_size must be a positive int"),
    (lambda: distributed.shard_batch([1, 2], 0, 2), TypeError, "batch must be a tensor"),
    (lambda: distributed.shard_batch(torch.tensor(3.0), 0, 1), TypeError, "got shape ()"),
])
def test_shard_batch_explains_bad_input(call, error, message):
    with pytest.raises(error, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        call()


def test_collectives_say_they_need_a_process_group_and_a_model():
    model = torch.nn.Linear(2, 2)
    for function in (distributed.average_gradients, distributed.broadcast_parameters):
        with pytest.raises(RuntimeError, match="init_process_group"):
            function(model)
        with pytest.raises(TypeError, match="takes the model"):
            function(model.parameters())
    with pytest.raises(TypeError, match="DistributedDataParallel that wraps it"):
        distributed.BucketTimeline(model, model)


REPORT = """
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
attnlib.ddp_train FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-07_15:55:09
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : {exitcode}
  error_file: {error_file}
  traceback : {traceback}
============================================================
"""


@pytest.mark.parametrize("exitcode, error_file, traceback, fragments", [
    ("1 (pid: 7)", "/tmp/e.json", "Traceback (most recent call last):\n    File ...\n  ValueError: bad shape\n",
     ["rank 1 failed first", "ValueError: bad shape; exit code 1"]),
    ("-9 (pid: 7)  (SIGKILL)", "<N/A>", "Signal 9 (SIGKILL) received by PID 7",
     ["rank 1 failed first", "no Python traceback (the process was killed or called os._exit); it ended with SIGKILL"]),
    ("3 (pid: 7)", "<N/A>", "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html",
     ["no Python traceback (the process was killed or called os._exit); exit code 3"]),
])
def test_torchruns_failure_report_becomes_one_clear_error(exitcode, error_file, traceback, fragments):
    error = launch._failure("", REPORT.format(exitcode=exitcode, error_file=error_file, traceback=traceback), 1, 2.5, 0)
    assert error.rank == 1 and error.returncode == 1 and error.seconds == 2.5
    for fragment in fragments:
        assert fragment in str(error), str(error)
    other = launch._failure("", "something else went wrong\n", 2, 1.0, 0)
    assert other.rank is None and "torchrun exited with code 2" in str(other) and "something else" in str(other)


# ----- memory -------------------------------------------------------------------------------
def _stepped(optimizer_class, **options):
    torch.manual_seed(0)
    model = ddp_train.build_model(TINY, 30)
    optimizer = optimizer_class(model.parameters(), **options)
    model(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))[1].backward()
    optimizer.step()
    return model, optimizer


def test_optimizer_state_bytes_counts_adams_two_moments_and_step_counters():
    model, adam = _stepped(torch.optim.Adam)
    tensors = list(model.parameters())
    n = sum(p.numel() for p in tensors)
    assert distributed.optimizer_state_bytes(adam) == 8 * n + 4 * len(tensors)
    assert distributed.optimizer_state_bytes(_stepped(torch.optim.SGD, lr=0.1)[1]) == 0
    assert distributed.optimizer_state_bytes(_stepped(torch.optim.SGD, lr=0.1, momentum=0.9)[1]) == 4 * n
    assert distributed.tensor_bytes(torch.zeros(3, 5, dtype=torch.float16)) == 30
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        distributed.optimizer_state_bytes(model)
    with pytest.raises(TypeError, match="torch.Tensor"):
        distributed.tensor_bytes([1.0])


def test_training_memory_follows_the_stages_of_zero():
    n, w = 1_000_000, 8
    fp32 = distributed.training_memory(n)
    assert fp32 == {"parameters": 4 * n, "gradients": 4 * n, "optimizer": 8 * n, "total": 16 * n}
    assert distributed.training_memory(n, w, precision="mixed")["total"] == 16 * n  # mixed precision: still 16
    assert distributed.training_memory(n, w, sharding="optimizer", precision="mixed")["total"] == 4 * n + 12 * n / w
    assert distributed.training_memory(n, w, sharding="gradients", precision="mixed")["total"] == 2 * n + 14 * n / w
    assert distributed.training_memory(n, w, sharding="parameters", precision="mixed")["total"] == 16 * n / w
    assert distributed.training_memory(n, w, sharding="parameters")["parameters"] == 4 * n / w


@pytest.mark.parametrize("kwargs, message", [
    ({"num_parameters": 0}, "num_parameters must be a positive int"),
    ({"num_parameters": 10, "world_size": 0}, "world_size must be a positive int"),
    ({"num_parameters": 10, "sharding": "zero3"}, "sharding must be one of"),
    ({"num_parameters": 10, "precision": "bf16"}, "precision must be one of"),
])
def test_training_memory_explains_bad_input(kwargs, message):
    n = kwargs.pop("num_parameters")
    with pytest.raises(ValueError, match=message):
        distributed.training_memory(n, **kwargs)


# ----- the launcher, without processes ------------------------------------------------------------
def test_the_command_runs_this_python_on_loopback_only():
    command = launch.torchrun_command("attnlib.ddp_train", ["--steps", 3], nproc_per_node=2)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[command.index("--nproc-per-node") + 1] == "2"
    assert command[command.index("--rdzv-endpoint") + 1] == "127.0.0.1:0"  # a free port, picked by the system
    assert command[command.index("--local-addr") + 1] == "127.0.0.1"
    assert command[-4:] == ["-m", "attnlib.ddp_train", "--steps", "3"]
    assert launch.torchrun_command("/tmp/x.py", port=29500)[-1] == "/tmp/x.py"
    hosts = [a.split(":")[0] for a in command if a.count(".") == 3 and a[0].isdigit()]
    assert hosts and set(hosts) == {"127.0.0.1"}


@pytest.mark.parametrize("kwargs, error, message", [
    ({"nproc_per_node": 0}, ValueError, "nproc_per_node must be a positive int"),
    ({"port": 70000}, ValueError, "port must be an int in"),
    ({"target": ""}, TypeError, "target must be a module name or a script path"),
])
def test_the_command_explains_bad_input(kwargs, error, message):
    target = kwargs.pop("target", "attnlib.ddp_train")
    with pytest.raises(error, match=message):
        launch.torchrun_command(target, **kwargs)


def test_a_taken_port_fails_at_once_with_a_clear_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        start = time.perf_counter()
        with pytest.raises(DistributedRunError, match=f"port {port} on 127.0.0.1 is already in use.*port=0"):
            launch.launch("attnlib.ddp_train", ["--out", "x.json"], port=port, timeout=60)
        assert time.perf_counter() - start < 1.0  # nothing was started
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        launch.launch("attnlib.ddp_train", timeout=0)


def test_the_loopback_interface_is_found():
    if sys.platform.startswith("linux"):
        assert launch.loopback_interface() == "lo"
    assert 0 < launch.free_port() < 65536


def _processes_running(marker: str) -> list[int]:
    """Ids of processes whose command line contains ``marker`` (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="ignore"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_a_run_past_its_timeout_is_stopped_whole(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text("import time\ntime.sleep(600)\n")
    start = time.perf_counter()
    with pytest.raises(DistributedRunError, match="did not finish within timeout=2 s, so all its processes were stopped"):
        launch.launch(str(script), timeout=2)
    assert time.perf_counter() - start < 30
    time.sleep(0.2)
    assert _processes_running(str(script)) == []  # torchrun and any worker it had started: gone


# ----- the script's arguments ---------------------------------------------------------------------
def test_config_flags_round_trip_and_strategies_take_step_counts():
    args = ddp_train.parse_args(["--out", "r.json", "--strategies", "manual:3,ddp", *TINY.args()])
    assert ddp_train.Config(**{f: getattr(args, f) for f in ddp_train.Config.__dataclass_fields__}) == TINY
    assert args.strategies == {"manual": 3, "ddp": TINY.steps}


@pytest.mark.parametrize("argv, message", [
    (["--strategies", "dp"], "'dp' is not one of"),
    (["--strategies", "ddp,ddp"], "used once"),
    (["--strategies", "ddp:x"], "optionally with ':steps'"),
    (["--strategies", "ddp:0"], "optionally with ':steps'"),
    (["--checkpoint", "c.pt"], "--checkpoint and --save-at go together"),
    (["--strategies", "fsdp", "--checkpoint", "c.pt", "--save-at", "2"], "FSDP model's weights are sharded"),
])
def test_bad_arguments_are_explained(argv, message, capsys):
    with pytest.raises(SystemExit):
        ddp_train.parse_args(["--out", "r.json", *argv])
    assert message in capsys.readouterr().err


def test_without_torchrun_the_script_says_how_to_start_it(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match="start this script with torchrun"):
        ddp_train.main(["--out", "r.json"])


# ----- two real processes -------------------------------------------------------------------------
def _run(tmp, name, *extra, strategies="ddp"):  # (manual: the same collectives, without DDP's slow import)
    out = tmp / f"{name}.json"
    result = launch.launch("attnlib.ddp_train", ["--out", out, "--strategies", strategies, *extra, *TINY.args()],
                           nproc_per_node=WORLD, timeout=240)
    return result, json.loads(out.read_text())


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    strategies = "manual:3,ddp,zero:3" + (",fsdp:3" if ddp_train.fsdp_available() else "")
    result, report = _run(tmp, "runs", "--checkpoint", tmp / "ckpt.pt", "--save-at", 3, "--bucket-cap-mb", 0.004,
                          strategies=strategies)
    return tmp, result, report


def _one_process_losses(config):
    """The reference: one process, the global batch, train.fit, the same seed."""
    tokens, vocab = ddp_train.load_tokens(config)
    model = ddp_train.build_model(config, vocab)
    history = train.fit(model, lambda: ddp_train.global_batches(tokens, config, WORLD * config.batch_size),
                        lambda m, batch: m(*batch)[1], optimizer=torch.optim.Adam(model.parameters(), lr=config.lr),
                        max_steps=config.steps, clip_grad_norm=None, mixed_precision="none", progress=False)
    return history.losses


def test_two_processes_train_the_same_run_as_one_with_the_global_batch(two_processes):
    _, result, report = two_processes
    assert result.returncode == 0 and report["world_size"] == WORLD and report["backend"] == "gloo"
    runs = report["runs"]
    ddp = runs["ddp"]["losses"]
    assert len(ddp) == TINY.steps and ddp[-1] < ddp[0]
    reference = _one_process_losses(TINY)
    assert max(abs(a - b) for a, b in zip(ddp, reference)) < 1e-5
    for name in ("manual", "zero", "fsdp"):
        if name in runs:  # averaged by hand, ZeRO and FSDP: DDP's losses and weights, step for step
            assert runs[name]["losses"] == pytest.approx(ddp[:3], abs=1e-6)
            assert runs[name]["max_weight_difference"] <= 1e-6


def test_sharding_halves_what_each_rank_holds(two_processes):
    runs = two_processes[2]["runs"]
    full = runs["ddp"]["optimizer_state_bytes"]
    assert full[0] == full[1] > 0
    zero = runs["zero"]["optimizer_state_bytes"]
    assert sum(zero) == pytest.approx(full[0], rel=0.01) and all(0.3 < b / full[0] < 0.7 for b in zero)
    if "fsdp" in runs:
        assert all(b == pytest.approx(runs["ddp"]["parameter_bytes"][0] / 2, rel=0.1)
                   for b in runs["fsdp"]["parameter_bytes"])


def test_ddp_buckets_are_timed_during_the_backward_pass(two_processes):
    timeline = two_processes[2]["runs"]["ddp"]["timeline"]
    buckets, ready = timeline["buckets"], timeline["gradients_ready"]
    assert len(buckets) >= 2 and sum(b[1] for b in buckets) == len(ready)  # each gradient in one bucket
    assert all(0 <= start <= end <= timeline["backward_seconds"] for _, _, start, end in buckets)
    assert min(b[2] for b in buckets) < max(ready)  # the first all-reduce started before backward ended


def test_rank_0_checkpoints_and_a_resumed_run_continues_the_curve(two_processes):
    tmp, _, report = two_processes
    model = ddp_train.build_model(TINY, ddp_train.load_tokens(TINY)[1])
    extra = train.load_checkpoint(tmp / "ckpt.pt", model, torch.optim.Adam(model.parameters()))
    assert extra["step"] == 3 and extra["global_batch"] == WORLD * TINY.batch_size and extra["strategy"] == "ddp"
    _, resumed = _run(tmp, "resumed", "--resume", tmp / "ckpt.pt", "--bucket-cap-mb", 0.004)
    run = resumed["runs"]["ddp"]
    assert run["first_step"] == 4
    assert run["losses"] == pytest.approx(report["runs"]["ddp"]["losses"][3:], abs=1e-6)


def test_a_checkpoint_of_another_run_is_refused():
    extra = {"step": 3, "global_batch": 8, "config": {**ddp_train.dataclasses.asdict(TINY), "d_model": 32}}
    with pytest.raises(train.CheckpointError, match="would not continue the same curve"):
        ddp_train._check_resumable(extra, TINY, WORLD, "c.pt")
    extra = {"step": 9, "global_batch": 8, "config": ddp_train.dataclasses.asdict(TINY)}
    with pytest.raises(train.CheckpointError, match="saved after step 9; this run has only 6 steps"):
        ddp_train._check_resumable(extra, TINY, WORLD, "c.pt")


def test_a_crashed_rank_ends_the_run_with_an_error_that_names_it(tmp_path):
    with pytest.raises(DistributedRunError) as caught:
        _run(tmp_path, "crash", "--crash-rank", 1, "--crash-step", 2, "--timeout", 120, strategies="manual")
    error = caught.value
    assert error.rank == 1 and error.returncode != 0
    assert str(error).startswith("rank 1 failed first") and "RuntimeError: simulated crash of rank 1 at step 2" in str(error)
    assert error.seconds < 120  # torchrun stopped the run; nobody waited for the collectives' timeout
    assert not (tmp_path / "crash.json").exists()


def test_a_stalled_rank_ends_the_run_when_the_collectives_time_out(tmp_path):
    with pytest.raises(DistributedRunError) as caught:
        _run(tmp_path, "hang", "--hang-rank", 1, "--hang-step", 2, "--timeout", 2, strategies="manual")
    error = caught.value
    assert error.rank == 0 and "Timed out waiting 2000ms" in str(error)  # the rank that waited gave up
    assert 2 <= error.seconds < 200
