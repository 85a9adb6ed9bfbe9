"""ssl_jax.local_pod and launch/local_pod.sh with a stand-in for the trainer (fast).

The stand-in is a Python script given as the pod's interpreter: it records the environment and
arguments each process got, and behaves as told by its process id (exit with a code, or hang).
The real trainer under the pod is exercised by tests/test_pod.py (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ssl_jax import local_pod

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

STAND_IN = """#!{python}
import json, os, sys, time
me = int(os.environ["SSL_JAX_PROCESS_ID"])
keys = ("SSL_JAX_COORDINATOR", "SSL_JAX_NUM_PROCESSES", "SSL_JAX_PROCESS_ID", "SSL_JAX_MULTIHOST",
        "XLA_FLAGS", "TMPDIR", "SSL_JAX_CACHE", "JAX_PLATFORMS")
record = dict({{k: os.environ.get(k) for k in keys}}, argv=sys.argv[1:],
              tmp_exists=os.path.isdir(os.environ["TMPDIR"]))
with open(os.path.join(os.environ["RECORDS"], f"{{me}}.json"), "w") as f:
    json.dump(record, f)
print(f"hello from {{me}}", flush=True)
behaviour = json.loads(os.environ.get("BEHAVIOUR", "{{}}")).get(str(me), 0)
if behaviour == "hang":
    time.sleep(600)
sys.exit(behaviour)
"""


@pytest.fixture
def stand_in(tmp_path):
    path = tmp_path / "python"
    path.write_text(STAND_IN.format(python=sys.executable))
    path.chmod(0o755)
    records = tmp_path / "records"
    records.mkdir()
    return str(path), records


def read(records, n):
    return [json.loads((records / f"{i}.json").read_text()) for i in range(n)]


def test_each_process_gets_its_place_devices_and_own_disk(stand_in, tmp_path):
    python, records = stand_in
    env = dict(
        os.environ,
        RECORDS=str(records),
        XLA_FLAGS="--xla_cpu_foo=1 --xla_force_host_platform_device_count=8",
        SSL_JAX_PROCESS_ID="7",
    )
    pod = local_pod.start(
        3,
        ["--config=c.py", "--workdir=gs://b/w"],
        devices=2,
        logdir=str(tmp_path / "logs"),
        environ=env,
        python=python,
    )
    assert pod.wait(timeout=60) == [0, 0, 0]
    got = read(records, 3)
    assert len({g["SSL_JAX_COORDINATOR"] for g in got}) == 1
    assert got[0]["SSL_JAX_COORDINATOR"].startswith("127.0.0.1:")
    assert [g["SSL_JAX_PROCESS_ID"] for g in got] == ["0", "1", "2"]
    assert {g["SSL_JAX_NUM_PROCESSES"] for g in got} == {"3"}
    assert {g["XLA_FLAGS"] for g in got} == {
        "--xla_cpu_foo=1 --xla_force_host_platform_device_count=2"
    }
    tmpdirs = [g["TMPDIR"] for g in got]
    assert len(set(tmpdirs)) == 3 and all(g["tmp_exists"] for g in got)
    assert all(g["SSL_JAX_CACHE"].startswith(g["TMPDIR"]) for g in got)
    assert not any(os.path.exists(d) for d in tmpdirs)  # removed at the end
    assert all(
        g["argv"] == ["-m", "ssl_jax.main", "--config=c.py", "--workdir=gs://b/w", "--multihost"]
        for g in got
    )
    assert pod.log(1) == "hello from 1\n"


def test_a_failed_process_and_one_that_hangs(stand_in, tmp_path):
    """The others get `grace` seconds to stop by themselves; one that does not is killed (None)."""
    python, records = stand_in
    env = dict(os.environ, RECORDS=str(records), BEHAVIOUR=json.dumps({"1": 3, "2": "hang"}))
    pod = local_pod.start(
        3, ["--config=c.py"], environ=env, python=python, logdir=str(tmp_path / "logs")
    )
    assert pod.wait(timeout=60, grace=2) == [0, 3, None]


def test_command_line(stand_in, tmp_path):
    """python -m ssl_jax.local_pod: the failed process's status, every log line prefixed."""
    python, records = stand_in
    env = dict(os.environ, RECORDS=str(records), BEHAVIOUR=json.dumps({"0": 5}), PYTHONPATH=ROOT)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssl_jax.local_pod",
            "-n",
            "2",
            f"--python={python}",
            f"--logdir={tmp_path / 'logs'}",
            "--",
            "--config=c.py",
            "--workdir=w",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "[p1] hello from 1" in proc.stdout
    assert "process 0 exited with 5" in proc.stderr


def test_shell_script(tmp_path):
    """launch/local_pod.sh N ARGS runs the real trainer in N processes (here a config error in
    both: exit 2 from each, reported); a count that is not a number is a usage error."""
    script = os.path.join(ROOT, "launch", "local_pod.sh")
    env = dict(os.environ, PYTHON=sys.executable, LOGDIR=str(tmp_path / "logs"), PYTHONPATH=ROOT)
    bad = subprocess.run(
        ["bash", script, "four", "--config=c.py"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "got 'four'" in bad.stderr
    proc = subprocess.run(
        ["bash", script, "2", "--config=missing.py", "--workdir=w"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "[p0] Config error" in proc.stdout and "[p1] Config error" in proc.stdout
    assert "process 1 exited with 2" in proc.stderr
