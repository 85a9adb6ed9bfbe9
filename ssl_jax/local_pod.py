"""A pod on one machine: N CPU processes that train one run together, as the hosts of a pod do.

  python -m ssl_jax.local_pod --processes=4 [--devices=2] [--logdir=DIR] -- \\
      --config=configs/jigsaw_r50.py:runlocal --workdir=gs://bucket/run
  launch/local_pod.sh 4 --config=configs/jigsaw_r50.py:runlocal --workdir=gs://bucket/run

Every process runs ``python -m ssl_jax.main ARGS --multihost`` with the variables a cluster
script sets for it (``SSL_JAX_COORDINATOR=127.0.0.1:PORT``, ``SSL_JAX_NUM_PROCESSES``,
``SSL_JAX_PROCESS_ID``), its own virtual CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=D``) and, like a separate host, its own local
disk: a private temporary directory (``TMPDIR``, and the permutation-set cache ``SSL_JAX_CACHE``
under it), removed at the end. Processes share nothing but the workdir, which should be a bucket
(``gs://``; ``STORAGE_EMULATOR_HOST`` sends it to a local emulator) to rehearse a pod, and the
JAX compilation cache if one is set (``JAX_COMPILATION_CACHE_DIR``), which only saves time.
Collectives between the processes go over loopback TCP (gloo), as between hosts.

Output: each process's log goes to ``DIR/process_I.log`` (a temporary folder if no --logdir)
and, prefixed with ``[pI]``, to this command's output. The command exits with 0 when every
process did, else with the exit status of the lowest-numbered process that failed. It does not
stop the others when one fails: a pod has no such supervisor, and the run itself must stop them
(see RELIABILITY.md); a process still running ``--grace`` seconds after another failed is killed
and reported. SIGTERM
or Ctrl-C here is passed on to every process as SIGTERM (a preemption: they save and stop).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence

_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the coordinator binds it moments later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def process_environment(
    base: Mapping[str, str], index: int, count: int, port: int, devices: int, tmpdir: str
) -> dict[str, str]:
    """The environment of process ``index`` of ``count``: cluster variables, devices, own disk."""
    env = {k: v for k, v in base.items() if not k.startswith("SSL_JAX_PROCESS")}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_FLAG)]
    env.update(
        SSL_JAX_MULTIHOST="1",
        SSL_JAX_COORDINATOR=f"127.0.0.1:{port}",
        SSL_JAX_NUM_PROCESSES=str(count),
        SSL_JAX_PROCESS_ID=str(index),
        XLA_FLAGS=" ".join([*flags, f"{_DEVICE_FLAG}={devices}"]),
        JAX_PLATFORMS=env.get("JAX_PLATFORMS", "cpu"),
        TMPDIR=tmpdir,
        SSL_JAX_CACHE=os.path.join(tmpdir, "cache"),
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclasses.dataclass
class Pod:
    """N running processes of one run; ``wait()`` collects them."""

    processes: list[subprocess.Popen]
    logs: list[str]
    tmpdirs: list[str]
    echo: bool
    _threads: list[threading.Thread] = dataclasses.field(default_factory=list)

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to process ``index`` (a fault, or a preemption with SIGTERM)."""
        self.processes[index].send_signal(sig)

    def terminate_all(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None, grace: float = 120.0) -> list[int | None]:
        """Waits for every process; returns their exit statuses (None: killed here).

        Once one process has failed, the others get ``grace`` more seconds to stop by
        themselves; any still running then is killed and its status is None. ``timeout`` bounds
        the whole wait the same way.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        failed_at = None
        while any(p.poll() is None for p in self.processes):
            now = time.monotonic()
            if failed_at is None and any(p.poll() not in (None, 0) for p in self.processes):
                failed_at = now
            if (failed_at is not None and now - failed_at > grace) or (
                deadline is not None and now > deadline
            ):
                break
            time.sleep(0.2)
        codes: list[int | None] = []
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                p.wait()
                codes.append(None)
            else:
                codes.append(p.returncode)
        for t in self._threads:
            t.join(timeout=5)
        for d in self.tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
        return codes

    def log(self, index: int) -> str:
        with open(self.logs[index], encoding="utf-8", errors="replace") as f:
            return f.read()


def start(
    count: int,
    main_args: Sequence[str],
    *,
    devices: int = 2,
    logdir: str | None = None,
    environ: Mapping[str, str] | None = None,
    echo: bool = False,
    cwd: str | None = None,
    python: str = sys.executable,
    wrap: Mapping[int, Sequence[str]] | None = None,
) -> Pod:
    """Starts ``count`` processes of ``python -m ssl_jax.main MAIN_ARGS --multihost``.

    Args:
      count: the number of processes (hosts).
      main_args: ssl_jax.main's arguments, the same for every process.
      devices: virtual CPU devices per process.
      logdir: where process_I.log go (created; a temporary folder if None).
      environ: the base environment (os.environ if None).
      echo: also copy each log line, prefixed with [pI], to this process's stdout.
      cwd: the processes' working directory.
      python: the interpreter.
      wrap: a command prefix per process index (e.g. to run one process as another user).
    """
    if count < 1:
        raise ValueError(f"--processes={count}: a pod needs at least 1 process.")
    if devices < 1:
        raise ValueError(f"--devices={devices}: each process needs at least 1 device.")
    base = dict(os.environ if environ is None else environ)
    logdir = logdir or tempfile.mkdtemp(prefix="local_pod_logs_")
    os.makedirs(logdir, exist_ok=True)
    port = free_port()
    args = [*main_args] if "--multihost" in main_args else [*main_args, "--multihost"]
    pod = Pod([], [], [], echo)
    for index in range(count):
        tmpdir = tempfile.mkdtemp(prefix=f"local_pod_p{index}_")
        env = process_environment(base, index, count, port, devices, tmpdir)
        log_path = os.path.join(logdir, f"process_{index}.log")
        prefix = list((wrap or {}).get(index, ()))
        process = subprocess.Popen(
            [*prefix, python, "-m", "ssl_jax.main", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C here reaches the children only as SIGTERM
        )
        thread = threading.Thread(
            target=_copy_lines, args=(process.stdout, log_path, f"[p{index}] " if echo else None)
        )
        thread.daemon = True
        thread.start()
        pod.processes.append(process)
        pod.logs.append(log_path)
        pod.tmpdirs.append(tmpdir)
        pod._threads.append(thread)
    return pod


def _copy_lines(stream, path: str, prefix: str | None) -> None:
    with open(path, "wb") as log:
        for line in iter(stream.readline, b""):
            log.write(line)
            log.flush()
            if prefix is not None:
                sys.stdout.write(prefix + line.decode("utf-8", errors="replace"))
                sys.stdout.flush()
    stream.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_jax.local_pod",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--processes", "-n", type=int, default=4)
    parser.add_argument("--devices", type=int, default=2, help="virtual CPU devices per process")
    parser.add_argument("--logdir", default=None)
    parser.add_argument("--grace", type=float, default=120.0)
    parser.add_argument("--python", default=sys.executable, help="the processes' interpreter")
    parser.add_argument("main_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    main_args = args.main_args[1:] if args.main_args[:1] == ["--"] else args.main_args
    if not any(a.startswith("--config") for a in main_args):
        parser.error("give ssl_jax.main's arguments after --, e.g. -- --config=C --workdir=W")
    try:
        pod = start(
            args.processes,
            main_args,
            devices=args.devices,
            logdir=args.logdir,
            echo=True,
            python=args.python,
        )
    except ValueError as e:
        parser.error(str(e))
    print(f"local_pod: {args.processes} processes, logs in {os.path.dirname(pod.logs[0])}")

    def forward(signum, frame):
        print(f"local_pod: signal {signum}: sending SIGTERM to every process", flush=True)
        pod.terminate_all()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = pod.wait(grace=args.grace)
    for index, code in enumerate(codes):
        if code is None:
            print(
                f"local_pod: process {index} was still running {args.grace:g} s after "
                "another failed and was killed",
                file=sys.stderr,
            )
        elif code:
            print(
                f"local_pod: process {index} exited with {code}; log {pod.logs[index]}",
                file=sys.stderr,
            )
    failed = [c for c in codes if c != 0]
    if not failed:
        return 0
    first = failed[0]
    return 1 if first is None else (first if first > 0 else 128 - first)


if __name__ == "__main__":
    sys.exit(main())
