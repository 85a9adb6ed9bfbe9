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
import logging
import os
import sys

# TensorFlow only feeds the input pipeline; keep its C++ start-up chatter out of the run's log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax  # noqa: E402

from ssl_jax import config_lib, evaluators, paths  # noqa: E402
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

    paths.makedirs(args.workdir)
    if jax.process_index() == 0:
        paths.write_text(
            paths.join(args.workdir, "config.json"), config.to_json_best_effort(indent=2)
        )
    try:
        if evaluators.is_evaluation(config):
            evaluators.evaluate(config, args.workdir)
        else:
            pretrain_lib.pretrain(config, args.workdir)
    except preemption.Preempted as e:
        # A standalone benchmark stopped by SIGTERM at a safe point: a clean stop, not a failure.
        logging.warning("Stopped by SIGTERM (%s). Run the same command to continue.", e)
        return 0
    except (loop.TrainingDiverged, loop.InputPipelineError) as e:
        logging.error("%s", e)
        return 1
    except (FileNotFoundError, config_lib.ConfigError) as e:
        # Data and shape problems found at start-up carry a message that says what to change.
        logging.error("%s", e)
        return 2
    except ValueError as e:
        if not evaluators.is_evaluation(config):
            raise
        # Bad evaluation input (features, labels, shapes): the message names the value and fix.
        logging.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
