"""Entry point of pretraining and of the transfer benchmarks.

  python -m ssl_jax.main --config=configs/X.py[:arg] --workdir=W [--config.k=v ...]

A pretraining config (configs/*.py) trains in W (``ssl_jax.train.pretrain``); an evaluation config
(configs/evals/*.py, whose ``evaluation`` field names a benchmark of ``ssl_jax.evaluators``)
evaluates the workdir named by --config.pretrained and writes W/results.json and W/results.md.
W may be a local folder or a gs:// URL (``ssl_jax.paths``).

Flags:
  --config=PATH[:ARG]   a config file and its argument string (see ssl_jax/config_lib.py).
  --workdir=DIR         where checkpoints, metrics.jsonl, TensorBoard logs and config.json go;
                        rerunning the same command in the same workdir resumes.
  --config.KEY=VALUE    overrides one field, e.g. --config.optim.batch_size=512.
  --multihost           call jax.distributed.initialize() first (also: SSL_JAX_MULTIHOST=1, or
                        config.train.multihost=True), for TPU pods and multi-node GPU jobs.
  --print_config        print the resolved config and exit without training.

Multi-process runs: every process runs the same command. On TPU pods and Slurm/Open MPI GPU
clusters jax.distributed.initialize() finds the coordinator, the process count and this process's
id by itself. Elsewhere (a plain cluster, or several processes on one machine) set all three:
  SSL_JAX_COORDINATOR=HOST:PORT   address of process 0's coordinator service, e.g. 10.0.0.1:1234;
  SSL_JAX_NUM_PROCESSES=N         the number of processes;
  SSL_JAX_PROCESS_ID=I            this process, 0 ... N-1 (process 0 writes metrics.jsonl).
SSL_JAX_HEARTBEAT_TIMEOUT_S=S (optional, any cluster) is how long the others wait for a process
that stopped answering (killed, its host lost) before they stop too, naming it; JAX's default is
100 s. ``python -m ssl_jax.local_pod`` starts such a run of N processes on this machine.
Cross-process collectives on CPU go through gloo over TCP (JAX's default CPU collectives), so
  SSL_JAX_MULTIHOST=1 SSL_JAX_COORDINATOR=127.0.0.1:1234 SSL_JAX_NUM_PROCESSES=2 \
  SSL_JAX_PROCESS_ID=0 python -m ssl_jax.main ...   (and PROCESS_ID=1 in a second shell)
trains one run with two processes on one machine.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import shutil
import sys
import tempfile

# TensorFlow only feeds the input pipeline; keep its C++ start-up chatter out of the run's log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax  # noqa: E402

from ssl_jax import config_lib, evaluators, paths  # noqa: E402
from ssl_jax.train import checkpoint as ckpt_lib  # noqa: E402
from ssl_jax.train import loop, preemption  # noqa: E402
from ssl_jax.train import pretrain as pretrain_lib  # noqa: E402


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_jax.main",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=False, default=None)
    parser.add_argument("--multihost", action="store_true")
    parser.add_argument("--print_config", action="store_true")
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unrecognised argument {item!r}; overrides look like --config.key=value")
        key, sep, value = item[len("--config.") :].partition("=")
        if not sep:
            parser.error(f"{item!r} needs a value: --config.{key}=VALUE")
        overrides.append((key, value))
    if args.workdir is None and not args.print_config:
        parser.error("--workdir is required")
    return args, overrides


# A fault's message, said again as the last line of the output before a run that stopped on it
# exits (see the end of this file).
LAST_WORDS: list[str] = []

DISTRIBUTED_ENV = {
    "SSL_JAX_COORDINATOR": "coordinator_address",
    "SSL_JAX_NUM_PROCESSES": "num_processes",
    "SSL_JAX_PROCESS_ID": "process_id",
    "SSL_JAX_HEARTBEAT_TIMEOUT_S": "heartbeat_timeout_seconds",
}


def distributed_arguments(environ) -> dict[str, str | int]:
    """jax.distributed.initialize's arguments from SSL_JAX_COORDINATOR/NUM_PROCESSES/PROCESS_ID.

    Unset variables are left out, so JAX detects them from the cluster (TPU, Slurm, Open MPI).
    Raises ValueError for a count or id that is not an integer, or an id out of range.
    """
    kwargs: dict[str, str | int] = {}
    for name, argument in DISTRIBUTED_ENV.items():
        value = environ.get(name, "").strip()
        if not value:
            continue
        if argument == "coordinator_address":
            kwargs[argument] = value
            continue
        try:
            kwargs[argument] = int(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not an integer.") from None
    if kwargs.get("heartbeat_timeout_seconds", 1) < 1:
        raise ValueError(
            f"SSL_JAX_HEARTBEAT_TIMEOUT_S={kwargs['heartbeat_timeout_seconds']} must be at "
            "least 1 (seconds)."
        )
    count, index = kwargs.get("num_processes"), kwargs.get("process_id")
    if count is not None and count < 1:
        raise ValueError(f"SSL_JAX_NUM_PROCESSES={count} must be at least 1.")
    if count is not None and index is not None and not 0 <= index < count:
        raise ValueError(
            f"SSL_JAX_PROCESS_ID={index} is not in [0, SSL_JAX_NUM_PROCESSES={count})."
        )
    return kwargs


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        force=True,  # absl (imported with JAX) may have configured the root logger already
    )
    for noisy in ("absl", "orbax", "jax._src", "tensorflow", "gcsfs", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # gcsfs logs a traceback when its own retries run out; ssl_jax.paths retries on top of it
    # and logs each retry in one line.
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
    try:
        config = config_lib.load_config(args.config)
        config_lib.apply_overrides(config, overrides)
    except config_lib.ConfigError as e:
        print(f"Config error: {e}", file=sys.stderr)
        return 2
    multihost = (
        args.multihost
        or os.environ.get("SSL_JAX_MULTIHOST") == "1"
        or bool(config.get("train", {}).get("multihost", False))
    )
    if multihost and not args.print_config:
        # Before anything touches a device (the checks below count devices).
        try:
            jax.distributed.initialize(**distributed_arguments(os.environ))
        except ValueError as e:
            print(f"Multi-process set-up error: {e}", file=sys.stderr)
            return 2
    try:
        if evaluators.is_evaluation(config):
            evaluators.check(config)
        else:
            pretrain_lib.check(config)
    except config_lib.ConfigError as e:
        print(f"Config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config)
        return 0
    retry_seconds = config.get("train", {}).get("store_retry_seconds")
    if retry_seconds is not None:
        paths.set_retry_seconds(retry_seconds)

    try:
        return run(config, args.workdir)
    except Exception as e:  # a full disk may surface from any library, wrapped in any type
        full = disk_full(e)
        if full is None:
            raise
        message = disk_full_message(full, args.workdir)
        logging.error("%s", message)
        # The checkpoint writer's threads fail the same way and report it with tracebacks
        # meanwhile: the message is said again as the process's last words.
        LAST_WORDS.append(message)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        return 1


def execute(config, workdir: str) -> dict[str, float]:
    """Pretrains or evaluates (``config`` decides) in ``workdir``, after writing its
    config.json; returns the last logged metrics. Errors propagate (``run`` turns them into exit
    statuses)."""
    paths.makedirs(workdir)
    if jax.process_index() == 0:
        paths.write_text(paths.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
    if evaluators.is_evaluation(config):
        return evaluators.evaluate(config, workdir)
    return pretrain_lib.pretrain(config, workdir)


def run(config, workdir: str) -> int:
    """Pretrains or evaluates in ``workdir``; the exit status, with known errors logged."""
    try:
        execute(config, workdir)
    except preemption.Preempted as e:
        # A standalone benchmark stopped by SIGTERM at a safe point: a clean stop, not a failure.
        logging.warning("Stopped by SIGTERM (%s). Run the same command to continue.", e)
        return 0
    except (
        loop.TrainingDiverged,
        loop.InputPipelineError,
        paths.StoreUnreachable,
        ckpt_lib.CheckpointUnreadable,
    ) as e:
        # Faults met while running, each with a message that names what is kept and what to do.
        logging.error("%s", e)
        LAST_WORDS.append(str(e))
        return 1
    except (FileNotFoundError, config_lib.ConfigError) as e:
        # Data and shape problems found at start-up carry a message that says what to change.
        logging.error("%s", e)
        return 2
    except ValueError as e:
        if disk_full(e) is not None:
            raise  # tensorstore reports a full disk as a ValueError: main() says what to free
        # Bad input (images, labels, features, shapes), also of an evaluation attached to
        # pretraining: the message names the value and the fix; checkpoints are kept.
        logging.error("%s", e)
        return 2
    return 0


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: BaseException) -> OSError | str | None:
    """The "no space left" error inside ``error`` (its causes included), or None.

    An OSError with ENOSPC / EDQUOT where Python wrote the file; the message text where a
    library (orbax, tensorstore, TensorFlow) wrapped the error in its own type.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            return error
        text = str(error)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            written = re.search(r'[Ff]ailed writing:? "([^"]+)"', text)
            if written:  # tensorstore (orbax's array writer) names the file it failed to write
                return OSError(errno.ENOSPC, "No space left on device", written.group(1))
            return text.strip().splitlines()[-1][:300]
        error = error.__cause__ or error.__context__
    return None


def disk_full_message(error: OSError | str, workdir: str) -> str:
    """What to tell the user: the file or the full disk, what to free or move, and the last
    complete checkpoint (kept: orbax completes a checkpoint only once every file is written)."""
    if isinstance(error, OSError):
        what = "No space left on device" + (
            f" writing {error.filename}." if error.filename else "."
        )
    else:
        what = f"No space left on device ({error})."
    full = [f"{path} ({role}, {free // 1024} KiB free)" for role, path, free in full_disks(workdir)]
    if full:
        what += " Full: " + ", ".join(full) + "."
    steps = ckpt_lib.saved_steps(workdir)
    kept = (
        f"The last complete checkpoint is step {steps[-1]} in {workdir}; the same command "
        "resumes from it."
        if steps
        else f"No checkpoint was completed in {workdir}."
    )
    return (
        f"{what} Free space on that disk, or point the temporary directory (TMPDIR), the "
        "caches (SSL_JAX_CACHE, JAX_COMPILATION_CACHE_DIR) or --workdir at a larger one. "
        f"{kept}"
    )


FULL_BELOW_BYTES = 16 * 2**20


def full_disks(workdir: str) -> list[tuple[str, str, int]]:
    """(role, path, free bytes) of the local places the run writes to that are (nearly) full.

    A failed write names no file (Python's OSError from a write carries none), so the message
    names the disks instead.
    """
    places = [
        ("the workdir", workdir),
        ("TMPDIR", tempfile.gettempdir()),
        ("SSL_JAX_CACHE", os.environ.get("SSL_JAX_CACHE", "")),
        ("JAX_COMPILATION_CACHE_DIR", jax.config.jax_compilation_cache_dir or ""),
    ]
    out = []
    for role, path in places:
        if not path or paths.is_url(path):
            continue
        existing = os.path.abspath(path)
        while not os.path.exists(existing) and existing != os.path.dirname(existing):
            existing = os.path.dirname(existing)
        free = shutil.disk_usage(existing).free
        if free < FULL_BELOW_BYTES:
            out.append((role, path, free))
    return out


def leave(code: int) -> None:
    """Exits at once after a fault (status 1), its message the last line of the output.

    Orbax's background save threads may still wait minutes on a store that is gone, and they
    and tensorstore's callbacks print tracebacks meanwhile: the output is closed to them, the
    fault's message is written once more, and the process leaves without them.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    output = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if LAST_WORDS:
        handlers = logging.getLogger().handlers
        record = logging.LogRecord(
            "ssl_jax", logging.ERROR, __file__, 0, "%s", (LAST_WORDS[-1],), None
        )
        text = handlers[0].format(record) if handlers else LAST_WORDS[-1]
        os.write(output, (text + "\n").encode())
    os._exit(code)


if __name__ == "__main__":
    code = main()
    if code == 1:
        leave(code)
    sys.exit(code)
