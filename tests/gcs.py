"""A local Google Cloud Storage emulator for tests: ``gs://`` paths without Google.

``gcs_bucket`` (session-scoped) starts ``gcp-storage-emulator`` in a subprocess on a free
loopback port with in-memory storage (nothing is written to disk), creates the bucket
``ssl-test``, sets ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`` for the session and yields
``"gs://ssl-test"``. At the end the server stops and the environment is restored. A conftest
uses it with one line (pytest puts tests/ on sys.path)::

    from gcs import gcs_bucket  # noqa: F401

``RestartableEmulator`` is a second emulator for outage tests: it keeps its objects on disk (in
a temporary folder) and serves on a fixed port, so ``stop()`` makes the store unreachable (the
connection is refused) and ``start()`` brings it back on the same address with every object
that was there. It is not a fixture: a test that stops the store must not stop the session's.

The emulator runs in its own process rather than a thread, so a client that holds the GIL while
it waits on the server cannot deadlock the test process. This file is also the server's entry
point (``python tests/gcs.py --port N``): it fixes two differences from the real service that
tensorstore (orbax's array writer) trips on, before starting the stock emulator:

- a media download carries no ``x-goog-generation`` header. Tensorstore then stamps what it
  read with generation 0 and a later conditional write of the same key (an OCDBT manifest)
  fails with "Malformed StorageGeneration", now and then, depending on whether the manifest was
  last read or last written;
- an object listing ignores ``startOffset``/``endOffset``, which tensorstore's list uses
  instead of ``prefix``, so a listing of ``gs://b/dir/`` returned every object in the bucket,
  with its first ``len("dir/")`` characters cut off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http import HTTPStatus

import pytest

BUCKET = "ssl-test"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0

# What ssl_jax.paths.configure() may set when it sees STORAGE_EMULATOR_HOST, and the switch
# itself; restored after the session so that nothing later talks to a stopped server.
_ENV_KEYS = (
    "STORAGE_EMULATOR_HOST",
    "TENSORSTORE_GCS_HTTP_URL",
    "GOOGLE_AUTH_TOKEN_FOR_TESTING",
    "EPATH_USE_TF",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/", timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def gcs_emulator(bucket: str = BUCKET) -> Iterator[str]:
    """Runs the emulator with ``bucket`` created; yields its endpoint ``http://127.0.0.1:PORT``.

    Tries up to 3 ports, in case the free one chosen is taken before the server binds it.
    """
    last_log = ""
    for _ in range(3):
        port = _free_port()
        url = f"http://{HOST}:{port}"
        workdir = tempfile.mkdtemp(prefix="gcs_emulator_")  # its cwd and log; not ours
        log_path = os.path.join(workdir, "emulator.log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), f"--port={port}", f"--bucket={bucket}"],
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while process.poll() is None and time.monotonic() < deadline and not _healthy(url):
                time.sleep(0.05)
            if process.poll() is None and _healthy(url):
                yield url
                return
            with open(log_path, encoding="utf-8", errors="replace") as f:
                last_log = f.read()[-2000:]
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    raise RuntimeError(f"gcp-storage-emulator did not start on {HOST} in 3 tries; log:\n{last_log}")


class RestartableEmulator:
    """An emulator with its objects on disk under ``data_dir``, stopped and started on one port.

    ``url`` is its endpoint (``http://127.0.0.1:PORT``, for STORAGE_EMULATOR_HOST); the bucket
    is created on the first start. ``stop()`` interrupts the server as Ctrl-C does (it finishes
    the request in hand); ``start()`` serves the same objects again. A context manager: it
    starts on entry and stops on exit.
    """

    def __init__(self, data_dir: str, bucket: str = BUCKET):
        self.data_dir, self.bucket = data_dir, bucket
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = os.path.join(data_dir, "emulator.log")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if self.process is not None:
            return
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    f"--port={self.port}",
                    f"--bucket={self.bucket}",
                    f"--data_dir={self.data_dir}",
                ],
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.process.poll() is None and time.monotonic() < deadline:
            if _healthy(self.url):
                return
            time.sleep(0.05)
        self.stop()
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            raise RuntimeError(
                f"The emulator did not start on {self.url}; log:\n{f.read()[-2000:]}"
            )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> RestartableEmulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def gcs_bucket() -> Iterator[str]:
    """``"gs://ssl-test"`` on a local emulator, with STORAGE_EMULATOR_HOST set for the session."""
    saved = {key: os.environ.get(key) for key in _ENV_KEYS}
    with gcs_emulator(BUCKET) as url:
        os.environ["STORAGE_EMULATOR_HOST"] = url
        try:
            yield f"gs://{BUCKET}"
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            paths = sys.modules.get("ssl_jax.paths")
            if paths is not None:  # let it drop its emulator settings
                paths.configure()


# ----------------------------------------------------------------------------- the server


def _patch_emulator() -> None:
    """Makes the stock emulator answer as the real service does where tensorstore needs it."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    original_download, original_ls = objects.download, objects.ls

    def download(request, response, storage, *args, **kwargs):
        original_download(request, response, storage, *args, **kwargs)
        if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
            try:
                obj = storage.get_file_obj(
                    request.params["bucket_name"], request.params["object_id"]
                )
            except NotFound:
                return
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj["metageneration"])

    def ls(request, response, storage, *args, **kwargs):
        original_ls(request, response, storage, *args, **kwargs)
        start = (request.query.get("startOffset") or [None])[0]
        end = (request.query.get("endOffset") or [None])[0]
        if response.status != HTTPStatus.OK or (start is None and end is None):
            return

        def inside(name: str) -> bool:
            return (start is None or name >= start) and (end is None or name < end)

        body = json.loads(response._content)
        body["items"] = [o for o in body.get("items") or [] if inside(o["name"])]
        body["prefixes"] = [p for p in body.get("prefixes") or [] if inside(p)]
        response.json(body)

    objects.download, objects.ls = download, ls  # objects.get calls download by name
    replacements = {original_download: download, original_ls: ls}
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            handlers[method] = replacements.get(handler, handler)


def _serve() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", default=BUCKET)
    parser.add_argument("--data_dir", default="", help="keep objects here (default: in memory)")
    args = parser.parse_args()
    _patch_emulator()
    from gcp_storage_emulator.__main__ import main

    storage = ["--in-memory"]
    if args.data_dir:
        storage = []
        if os.path.exists(os.path.join(args.data_dir, ".cloudstorage", ".meta")):
            args.bucket = ""  # there already, with its objects
    main(
        ([f"--data-dir={args.data_dir}"] if args.data_dir else [])
        + ["start", f"--host={HOST}", f"--port={args.port}", *storage, "--quiet"]
        + ([f"--default-bucket={args.bucket}"] if args.bucket else [])
    )


if __name__ == "__main__":
    _serve()
