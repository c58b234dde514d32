"""Start several training processes on this machine with torchrun, and stop them all (lesson 14).

:func:`launch` runs ``python -m torch.distributed.run --nproc-per-node N ... <module or script>``
with the Python that runs it (so in a notebook, the notebook's own environment), waits for
it with a timeout, and returns a :class:`LaunchResult`. Every connection goes to this machine's
loopback address, 127.0.0.1:

* torchrun's rendezvous endpoint is ``127.0.0.1:<port>``; with ``port=0`` (the default) the
  operating system picks a free port, so two launches never collide; a given port that is taken
  fails at once with a clear :class:`DistributedRunError`. (The store behind it, c10d's
  ``TCPStore``, listens on that port on every interface, as torch does not let torchrun choose;
  only processes of this machine connect to it. On a shared network, a firewall keeps others out.)
* ``--local-addr 127.0.0.1`` makes torchrun give the workers ``MASTER_ADDR=127.0.0.1`` (torch
  releases from before its fix in 2024, pytorch/pytorch#135262, may publish the host name instead);
* the workers' gloo connections listen and connect on the loopback interface (``GLOO_SOCKET_IFNAME``).

When a worker fails, torchrun stops the others and reports the first failure; :func:`launch`
turns that report into a :class:`DistributedRunError` that names the rank and its error.
If the run does not end within ``timeout`` seconds, every process it started is killed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"


class DistributedRunError(RuntimeError):
    """A multi-process run failed, timed out or could not start; the message says which rank and why.

    ``rank`` (the first rank that failed, or None), ``returncode``, ``seconds`` (from the
    launch to the failure) and ``output`` (torchrun's stdout and stderr) say more.
    """

    def __init__(self, message: str, *, rank: int | None = None, returncode: int | None = None,
                 seconds: float = 0.0, output: str = ""):
        super().__init__(message)
        self.rank, self.returncode, self.seconds, self.output = rank, returncode, seconds, output


@dataclass
class LaunchResult:
    """A finished run: its command, exit code (0), wall-clock seconds, and the workers' output."""

    command: list[str]
    returncode: int
    seconds: float
    stdout: str
    stderr: str


def torchrun_command(target: str, args=(), *, nproc_per_node: int = 2, port: int = 0) -> list[str]:
    """The torchrun command line that :func:`launch` runs: one machine, ``nproc_per_node`` workers.

    ``target`` is a module (``"attnlib.ddp_train"``, run with ``-m``) or a path to a ``.py`` script.
    """
    if isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int) or nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be a positive int, got {nproc_per_node!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError(f"port must be an int in [0, 65536) (0: a free port picked by the system), got {port!r}")
    if not isinstance(target, str) or not target:
        raise TypeError(f"target must be a module name or a script path (str), got {target!r}")
    command = [sys.executable, "-m", "torch.distributed.run",
               "--nnodes", "1", "--nproc-per-node", str(nproc_per_node),
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{LOOPBACK}:{port}", "--local-addr", LOOPBACK,
               "--max-restarts", "0"]
    command += [target] if target.endswith(".py") else ["-m", target]
    return command + [str(a) for a in args]


def launch(target: str, args=(), *, nproc_per_node: int = 2, port: int = 0, timeout: float = 120.0,
           env: dict | None = None) -> LaunchResult:
    """Run ``target`` on ``nproc_per_node`` processes with torchrun and wait at most ``timeout`` seconds.

    Returns a :class:`LaunchResult` when every worker exits cleanly. Raises
    :class:`DistributedRunError` when a worker fails (naming the first rank that failed and
    its error), when the run outlives ``timeout`` (all its processes are killed), or when
    ``port`` is already taken. ``env`` adds environment variables for the workers.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    command = torchrun_command(target, args, nproc_per_node=nproc_per_node, port=port)
    if port:
        _require_free_port(port)
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
                   "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})}
    interface = loopback_interface()
    if interface is not None:
        environment.setdefault("GLOO_SOCKET_IFNAME", interface)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
                               start_new_session=(os.name == "posix"))  # its own process group, to stop it whole
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        stdout, stderr = process.communicate(timeout=30)
        seconds = time.perf_counter() - start
        raise DistributedRunError(f"the run did not finish within timeout={timeout:g} s, so all its processes were "
                                  f"stopped. Its last output:\n{_tail(stdout + stderr)}", seconds=seconds,
                                  output=stdout + stderr) from None
    except BaseException:  # e.g. KeyboardInterrupt in a notebook: leave no process behind
        _stop(process)
        process.communicate(timeout=30)
        raise
    finally:
        _stop(process)  # torchrun has exited; this ends any worker it left in the group
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise _failure(stdout, stderr, process.returncode, seconds, port)
    return LaunchResult(command, process.returncode, seconds, stdout, stderr)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the system picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def loopback_interface() -> str | None:
    """The name of the loopback network interface (``lo`` on Linux, ``lo0`` on macOS), or None."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (AttributeError, OSError):
        return None
    for name in names:
        if name == "lo" or re.fullmatch(r"lo\d*", name):
            return name
    return None


def _require_free_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError as error:
            raise DistributedRunError(
                f"port {port} on {LOOPBACK} is already in use ({error.strerror}), so torchrun could not listen "
                "on it; pass port=0 to let the system pick a free port, or stop the program that holds it"
            ) from None


def _stop(process: subprocess.Popen) -> None:
    """Kill torchrun and every process under it, if anything of it is left.

    Killing torchrun's process group is not enough: torch's elastic agent may start each worker in
    a session of its own, and a worker that survives keeps the output pipes open. So the workers are
    found by walking the parent links in ``/proc`` (Linux) before anything is killed.
    """
    if os.name != "posix":
        if process.poll() is None:
            process.kill()
        return
    alive = process.poll() is None  # once torchrun is reaped its id may be reused: only its group is killed
    for pid in [process.pid, *_descendants(process.pid)] if alive else []:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(pid: int) -> list[int]:
    """The ids of every living process below ``pid`` (children, grandchildren, ...); [] without ``/proc``."""
    parents = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])  # the field after the state is the parent's id
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _failure(stdout: str, stderr: str, returncode: int, seconds: float, port: int) -> DistributedRunError:
    """torchrun's failure report → one clear error: which rank failed first, and how."""
    output = stdout + stderr
    if re.search(r"address already in use|EADDRINUSE", output, re.IGNORECASE):
        return DistributedRunError(f"port {port} on {LOOPBACK} is already in use, so torchrun could not listen on "
                                   "it; pass port=0 to let the system pick a free port", returncode=returncode,
                                   seconds=seconds, output=output)
    report = stderr.split("Root Cause (first observed failure):", 1)
    if len(report) == 2:
        root = report[1]
        rank_match = re.search(r"rank\s*:\s*(\d+)", root)
        exit_match = re.search(r"exitcode\s*:\s*(-?\d+)[^\n]*?(\((SIG\w+)\))?\s*$", root, re.MULTILINE)
        rank = int(rank_match.group(1)) if rank_match else None
        lines = [line.strip() for line in root.split("====")[0].splitlines() if line.strip()]
        error = lines[-1] if lines and "traceback" not in lines[-1] and not lines[-1].startswith("error_file") \
            else "no Python traceback (the process was killed or called os._exit)"
        if exit_match and exit_match.group(3):
            error += f"; it ended with {exit_match.group(3)}"
        elif exit_match:
            error += f"; exit code {exit_match.group(1)}"
        return DistributedRunError(f"rank {rank} failed first, after {seconds:.1f} s: {error}. torchrun then stopped "
                                   "the other ranks.", rank=rank, returncode=returncode, seconds=seconds,
                                   output=output)
    return DistributedRunError(f"torchrun exited with code {returncode} after {seconds:.1f} s. Its last output:\n"
                               f"{_tail(output)}", returncode=returncode, seconds=seconds, output=output)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
