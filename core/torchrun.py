"""`torchrun` on this machine with every socket on the loopback interface (the training stages' `nproc` > 1).

    python -m core.torchrun --nproc-per-node N [torchrun options] -m MODULE [ARGS...]

runs `python -m torch.distributed.run --master-addr 127.0.0.1 --master-port P --nproc-per-node N ... -m MODULE
ARGS` (the static rendezvous of one node) in this process, with one difference: torch's TCPStore server, which
every rank connects to, listens on all interfaces whatever address it is given. So the launcher first binds a socket
on 127.0.0.1 (a free port, picked by the kernel: no race with another launcher) and hands it to a store server;
torchrun's rendezvous then shares that server (`multi_tenant`, the same port) instead of opening its own. The ranks'
gloo sockets bind to the loopback interface (GLOO_SOCKET_IFNAME=lo), so nothing listens on another address.
The launcher ends with its parent (a killed `sail run` stops its ranks too) and, when a rank fails, prints one line
`core.torchrun: rank R failed (exit code E)` naming the first rank that failed.

`run_torchrun(module, args, nproc, ...)` is the caller's side: it starts that command, hands every line of the
ranks' output to a callback as it comes (`[rankR]:` in front of each, from torchrun's `--tee`), and raises
TorchrunFailed naming the failed rank, its exit code and its last line of output.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

FAILED = "core.torchrun: "  # the launcher's failure line starts with this
_RANK_LINE = re.compile(r"\[rank(\d+)\]:(?:\[rank\d+\]: ?)?(.*)")  # torch's own excepthook adds a second prefix
_OWN_OPTIONS = ("--master", "--rdzv", "--standalone", "--nnodes", "--node", "--local-addr")
"""torchrun options the launcher sets itself (a one-node static rendezvous on 127.0.0.1)."""

ROOT = Path(__file__).resolve().parents[1]  # the project's root: on the ranks' PYTHONPATH


class TorchrunFailed(RuntimeError):
    """A rank of a `run_torchrun` launch failed (or the launcher itself did); the message says which and how."""

    def __init__(self, message: str, rank: int | None, exit_code: int) -> None:
        super().__init__(message)
        self.rank = rank  # None: no rank was named (the launcher failed before or around the ranks)
        self.exit_code = exit_code


def torchrun_command(module: str, args: Sequence[str], nproc: int, log_dir: Path) -> list[str]:
    """The command that runs `python -m MODULE ARGS` as `nproc` ranks; every rank's output is also kept in
    `log_dir/<run id>/attempt_0/<rank>/{stdout,stderr}.log`."""
    return [
        sys.executable,
        "-m",
        "core.torchrun",
        "--nproc-per-node",
        str(nproc),
        "--role",
        "rank",  # output lines start with [rank0]:, [rank1]:, ...
        "--tee",
        "3",
        "--log-dir",
        str(log_dir),
        "-m",
        module,
        *args,
    ]


def torchrun_env(threads: int) -> dict[str, str]:
    """The ranks' environment: this one, with `threads` OpenMP threads per rank, the loopback interface for gloo
    and the project's root on the path."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MASTER_ADDR": "127.0.0.1",
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONUNBUFFERED": "1",  # lines reach the log as they are written
        # libraries' deprecation notices, once per rank (`sail`'s console leaves them out too)
        "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
        "PYTHONPATH": path,
    }


def run_torchrun(
    module: str,
    args: Sequence[str],
    nproc: int,
    *,
    threads: int,
    log_dir: Path,
    on_line: Callable[[str], None],
) -> None:
    """Runs `python -m MODULE ARGS` as `nproc` ranks on this machine (`torchrun_command`) with `threads` OpenMP
    threads each; `on_line` gets every line of their output. Raises TorchrunFailed when a rank fails: the message
    names the rank, how it ended (exit code or signal), its last line and the folder of its own log files."""
    log_dir.mkdir(parents=True, exist_ok=True)
    before = set(log_dir.iterdir())
    cmd = torchrun_command(module, args, nproc, log_dir)
    last: dict[int, str] = {}
    failure = None
    tail: collections.deque[str] = collections.deque(maxlen=5)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        bufsize=1,
        env=torchrun_env(threads),
    )
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            on_line(line)
            if line.startswith(FAILED):
                failure = line[len(FAILED) :]
            elif m := _RANK_LINE.fullmatch(line):
                if m.group(2).strip():
                    last[int(m.group(1))] = m.group(2).strip()
            elif line.strip():
                tail.append(line.strip())
        code = proc.wait()
    finally:
        if proc.poll() is None:  # the caller was interrupted: stop the launcher (it stops its ranks)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if code == 0:
        return
    suffix = ""
    m = re.match(r"rank (\d+) failed \((.*)\)", failure or "")
    if m:
        rank = int(m.group(1))
        said, files = last.get(rank), _rank_logs(log_dir, before, rank)
        if files:  # torchrun's tee may stop before a dying rank's last lines: its own file has them all
            said = _last_line(files[-1]) or said
            suffix = f"; its output: {files[0].parent}"
        said = f": {said}" if said else ""
        raise TorchrunFailed(
            f"torchrun rank {rank} of {nproc} failed ({m.group(2)}){said} (module {module}{suffix})", rank, code
        )
    said = f": {tail[-1]}" if tail else ""
    msg = f"torchrun of {nproc} ranks exited with code {code}{said} (module {module}{suffix})"
    raise TorchrunFailed(msg, None, code)


def _rank_logs(log_dir: Path, before: set[Path], rank: int) -> list[Path]:
    """The stdout.log and stderr.log files of `rank` in the launch's new folder of `log_dir` (torchrun's layout
    `<run id>_<random>/attempt_<k>/<rank>/`), stdout first; [] when there is none."""
    new = sorted((p for p in set(log_dir.iterdir()) - before if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not new:
        return []
    attempts = sorted(new[-1].glob(f"attempt_*/{rank}"))
    if not attempts:
        return []
    return [f for f in (attempts[-1] / "stdout.log", attempts[-1] / "stderr.log") if f.exists()]


def _last_line(path: Path) -> str | None:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return None
    m = re.fullmatch(r"\[rank\d+\]: ?(.*)", lines[-1])
    return m.group(1) if m else lines[-1]


# ------------------------------------------------------------------------------------------------------------
# The launcher (python -m core.torchrun)
# ------------------------------------------------------------------------------------------------------------


def _end_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux; elsewhere a no-op): torchrun then stops its ranks."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _describe(failure) -> str:
    """A torchrun ProcessFailure's end: 'exit code E' or 'signal NAME'."""
    if failure.exitcode < 0:
        return f"signal {failure.signal_name()}"
    return f"exit code {failure.exitcode}"


def main(argv: Sequence[str] | None = None) -> int:
    import socket

    import torch.distributed as dist
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    argv = list(sys.argv[1:] if argv is None else argv)
    head = argv[: argv.index("-m")] if "-m" in argv else argv
    own = [a for a in head if a.startswith(_OWN_OPTIONS)]
    if own:
        print(f"{FAILED}the launcher sets {own} itself (one node, 127.0.0.1)", file=sys.stderr)
        return 2
    _end_with_parent()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port, fd = sock.getsockname()[1], sock.detach()  # the store owns the descriptor from here on
    # the store server on that socket; torchrun's rendezvous store (same port, multi_tenant) shares it
    store = dist.TCPStore(
        "127.0.0.1", port, is_master=True, multi_tenant=True, master_listen_fd=fd, wait_for_workers=False
    )
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"})
    try:
        run.main(["--master-addr", "127.0.0.1", "--master-port", str(port), *argv])
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        print(f"{FAILED}rank {rank} failed ({_describe(failure)})", file=sys.stderr, flush=True)
        return 1
    finally:
        del store
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
