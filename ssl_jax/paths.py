"""Paths on local disks and object stores (``gs://bucket/...``) through one set of functions.

Every function takes a local path or a URL. Local paths go to Python's own ``os``/``shutil``
functions; a URL goes to the fsspec file system of its scheme (``gs://`` and ``gcs://``: gcsfs).
TensorFlow is never imported: ``tf.io.gfile``'s GCS client has its endpoint compiled in, so it
cannot be pointed at an emulator, and going through it would make tests and production differ.

Object stores have objects, not files in directories, and this module says what that means:

- a "directory" ``gs://b/d`` exists while some object's name starts with ``d/``: ``makedirs``
  does nothing there, ``isdir`` is false for an empty one, and it vanishes with its last object;
- ``replace`` on an object store copies then deletes (not atomic); on a local disk it is
  ``os.replace`` (atomic within one file system);
- writes reach the store when the file is closed, as one whole object (a reader never sees half
  of it); a ``with`` block that raises uploads nothing; append mode rewrites the whole object;
- directory listings are not cached (``use_listings_cache=False``), because orbax writes
  checkpoint arrays through tensorstore, which gcsfs cannot see.

Every object-store call retries transient errors (connection refused or reset, timeouts, HTTP
408/429/5xx) with exponential backoff and jitter, logging each retry with the path, for up to
``retry_seconds()`` (``set_retry_seconds``; ``python -m ssl_jax.main`` sets it from
``config.train.store_retry_seconds``, default 300 s), then raises ``StoreUnreachable`` naming the
store, the path and the limit. A store that does not answer is never taken for an empty one:
``exists``/``isfile``/``isdir`` say False only when the store says "not found". A file opened
for reading retries its opening; its later reads have gcsfs's own retries (about 30 s).

Local writes through ``write_bytes``/``write_text``/``write_json``/``save_npy`` are atomic (a
temporary file in the same directory, then ``os.replace``), and every write creates missing
parent directories, as an object store needs none.

One switch, the Google client convention ``STORAGE_EMULATOR_HOST=http://HOST:PORT``, sends every
``gs://`` access of the process to a GCS emulator instead of Google: this module's own (gcsfs),
orbax's directory and metadata operations (etils.epath), orbax's array data (tensorstore), and
orbax's bucket lookup (google-cloud-storage, which reads the variable itself). ``configure()``
passes it on; every function that touches ``gs://`` calls it, and so does
``checkpoint_directory``, so users need not. It reads the variable on each call and re-applies
when it changed (a test session sets and unsets it); tensorstore, though, keeps the credentials
it found first, so set the variable before the process first touches ``gs://``.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import glob as _glob
import io
import json
import logging
import os
import posixpath
import random
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, TypeVar

import fsspec
import numpy as np
from etils import epath

PathLike = str | os.PathLike
T = TypeVar("T")

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
GCS_SCHEMES = ("gs", "gcs")
# A fixed token tensorstore sends instead of searching for credentials: it would otherwise take
# $GOOGLE_APPLICATION_CREDENTIALS or the user's gcloud credentials (and send them to the
# emulator, or refresh them at Google), or else probe the GCE metadata server. Emulators ignore
# it.
_EMULATOR_TOKEN = "emulator-no-auth"
_MODES = ("r", "rb", "w", "wb", "a", "ab")

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- names


def is_url(path: PathLike) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return "://" in os.fspath(path)


def _split_url(url: str) -> tuple[str, str]:
    scheme, rest = url.split("://", 1)
    return scheme, rest


def join(root: PathLike, *parts: PathLike) -> str:
    """``os.path.join`` for local paths; for a URL, parts are joined with "/" (a leading "/" on a
    part does not restart from the root, but a part that is itself a URL does)."""
    out = os.fspath(root)
    for part in map(os.fspath, parts):
        if is_url(part):
            out = part
        elif not is_url(out):
            out = os.path.join(out, part)
        elif part:
            out = (out if out.endswith("/") else out + "/") + part.lstrip("/")
    return out


def dirname(path: PathLike) -> str:
    """``os.path.dirname``; a URL's bucket (``gs://b``) is its own parent, as "/" is."""
    path = os.fspath(path)
    if not is_url(path):
        return os.path.dirname(path)
    scheme, rest = _split_url(path)
    parent = posixpath.dirname(rest)
    return f"{scheme}://{parent or rest}"


def basename(path: PathLike) -> str:
    """``os.path.basename``; "" for a URL's bucket (``gs://b``), as for "/"."""
    path = os.fspath(path)
    if not is_url(path):
        return os.path.basename(path)
    _, rest = _split_url(path)
    return posixpath.basename(rest) if "/" in rest else ""


def abspath(path: PathLike) -> str:
    """A local path made absolute; a URL unchanged (``os.path.abspath("gs://b/x")`` would give
    "<cwd>/gs:/b/x", a local directory, and a run writing there loses its outputs)."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


# ----------------------------------------------------------------------------- configuration


class _Configured:
    lock = threading.Lock()
    done = False
    emulator: str | None = None  # the endpoint applied, None for Google's own
    env_set: dict[str, str] = {}  # what configure() put in os.environ for the emulator


def emulator_host() -> str | None:
    """The GCS emulator endpoint from STORAGE_EMULATOR_HOST, as ``http://host:port``, or None."""
    host = os.environ.get(EMULATOR_ENV, "").strip()
    if host in ("", "default"):  # "default" is gcsfs's spelling of "not set"
        return None
    if not host.startswith(("http://", "https://")):
        host = "http://" + host
    return host.rstrip("/")


def configure() -> str | None:
    """Points every component that touches ``gs://`` at STORAGE_EMULATOR_HOST, or at Google when
    it is unset; returns the emulator endpoint in force (None for Google).

    Idempotent and cheap once applied (it compares one environment variable); the functions of
    this module call it. With an emulator it sets, in this process:

    - ``TENSORSTORE_GCS_HTTP_URL`` = the endpoint: tensorstore's gcs driver (orbax's array
      writer) sends its JSON-API requests there;
    - ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` (unless set): tensorstore then sends this fixed token
      instead of looking for credentials;
    - ``EPATH_USE_TF=false``: etils.epath (orbax's directory and metadata operations) uses its
      fsspec backend, gcsfs, instead of ``tf.io.gfile``, which only talks to Google;
    - gcsfs: anonymous (``token="anon"``, no credential search) and its plain
      ``gcsfs.core.GCSFileSystem``, registered with fsspec for gs:// and gcs://, instead of
      ``ExtendedGcsFileSystem``, whose bucket-type probe (a gRPC call an emulator does not
      answer) costs about a minute per call; ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` is set
      too, for gcsfs imported later.

    Without an emulator it undoes those, and sets ``EPATH_USE_TF=false`` and gcsfs's
    ``use_listings_cache=False`` only where the user has not chosen, so that orbax reaches
    Google through gcsfs as this module does.
    """
    host = emulator_host()
    if _Configured.done and _Configured.emulator == host:
        return host
    with _Configured.lock:
        if _Configured.done and _Configured.emulator == host:
            return host

        if _Configured.emulator is not None:
            _unset_emulator(fsspec)
        if host is None:
            os.environ.setdefault("EPATH_USE_TF", "false")
            for scheme in GCS_SCHEMES:
                fsspec.config.conf.setdefault(scheme, {}).setdefault("use_listings_cache", False)
        else:
            _set_emulator(fsspec, host)
        _clear_epath_cache()
        _Configured.emulator, _Configured.done = host, True
    return host


def _set_env(key: str, value: str, force: bool) -> None:
    old = os.environ.get(key)
    if old == value:
        return
    if old is not None and not force:
        return
    if old is not None:
        log.warning("%s=%s replaced by %s for the GCS emulator", key, old, value)
    os.environ[key] = value
    _Configured.env_set[key] = value


def _set_emulator(fsspec: Any, host: str) -> None:
    _set_env("TENSORSTORE_GCS_HTTP_URL", host, force=True)
    _set_env("GOOGLE_AUTH_TOKEN_FOR_TESTING", _EMULATOR_TOKEN, force=False)
    _set_env("EPATH_USE_TF", "false", force=True)
    _set_env("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false", force=True)
    import gcsfs.core  # heavy (aiohttp, google-auth): imported only for gs:// paths

    for scheme in GCS_SCHEMES:
        fsspec.register_implementation(scheme, gcsfs.core.GCSFileSystem, clobber=True)
        conf = fsspec.config.conf.setdefault(scheme, {})
        conf.update(token="anon", use_listings_cache=False)
    log.info("gs:// goes to the GCS emulator at %s", host)


def _unset_emulator(fsspec: Any) -> None:
    for key, value in _Configured.env_set.items():
        if os.environ.get(key) == value:
            del os.environ[key]
    _Configured.env_set = {}
    import gcsfs  # heavy (aiohttp, google-auth): imported only for gs:// paths

    for scheme in GCS_SCHEMES:
        fsspec.register_implementation(scheme, gcsfs.GCSFileSystem, clobber=True)
        fsspec.config.conf.get(scheme, {}).pop("token", None)


def _clear_epath_cache() -> None:
    """Makes etils.epath see the new settings: it decides once per process whether to use
    TensorFlow (on its first path operation, local ones included) and keeps one fsspec file
    system per scheme. Both are private caches; they are cleared if they are there."""
    for module, function in (
        ("etils.epath.gpath", lambda m: m._is_tf_installed),
        ("etils.epath.backend", lambda m: m.fsspec_backend._get_filesystem),
    ):
        loaded = sys.modules.get(module)
        if loaded is None:
            continue
        try:
            function(loaded).cache_clear()
        except AttributeError:
            log.warning("%s has changed: gs:// may not follow STORAGE_EMULATOR_HOST", module)


def _fs(url: str) -> tuple[_RetryingFileSystem, str]:
    """The fsspec file system for ``url``, its calls retried (``retrying``), and the path it
    takes (the URL without its scheme)."""

    scheme, _ = _split_url(url)
    if scheme in GCS_SCHEMES:
        configure()
        _use_retrying_gcsfs()
    try:
        fs = fsspec.filesystem(scheme)
    except (ValueError, ImportError) as e:
        raise ValueError(
            f"No file system for {url!r} (scheme {scheme!r}): use a local path or gs://, or "
            f"install the fsspec implementation of {scheme}:// ({e})"
        ) from e
    return _RetryingFileSystem(fs, url), fs._strip_protocol(url)


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


# ----------------------------------------------------------------------------- retries


DEFAULT_RETRY_SECONDS = 300.0
_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
# How tensorstore (orbax's array writer) words a store that does not answer; once its own
# retries are spent it says "All N retry attempts failed" (under ABORTED, among others).
_TRANSIENT_PREFIXES = ("UNAVAILABLE:", "DEADLINE_EXCEEDED:")


class StoreUnreachable(OSError):
    """An object store kept failing with transient errors for longer than the retry limit."""


class _Retry:
    seconds = DEFAULT_RETRY_SECONDS
    setting = "config.train.store_retry_seconds"


def set_retry_seconds(seconds: float, setting: str = "config.train.store_retry_seconds") -> None:
    """How long (seconds) an object-store operation retries transient errors before giving up
    with StoreUnreachable (0: no retries); ``setting`` is what messages name as the knob."""
    if not seconds >= 0:
        raise ValueError(f"{setting}={seconds} must be a number of seconds, 0 or more.")
    _Retry.seconds, _Retry.setting = float(seconds), setting


def retry_seconds() -> float:
    """The limit set by set_retry_seconds (default DEFAULT_RETRY_SECONDS)."""
    return _Retry.seconds


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) says the store may answer later:
    connection refused, reset or timed out, HTTP 408/429/5xx, tensorstore's UNAVAILABLE or
    DEADLINE_EXCEEDED. Missing files, permissions and bad requests are not transient."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, StoreUnreachable | FileNotFoundError | PermissionError):
            return False
        if isinstance(error, FileExistsError):
            return False
        if isinstance(error, ConnectionError | TimeoutError):
            return True
        if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
            return True
        status = getattr(error, "code", None) or getattr(error, "status", None)
        if isinstance(status, int) and status in _TRANSIENT_STATUS:
            return True
        text = str(error)
        if text.startswith(_TRANSIENT_PREFIXES) or "retry attempts failed" in text:
            return True
        if "gcsfs" in sys.modules and _gcsfs_retriable(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _gcsfs_retriable(error: BaseException) -> bool:
    import gcsfs.retry  # heavy (aiohttp, google-auth); loaded already when this is called

    return gcsfs.retry.is_retriable(error)


def store_name(url: str) -> str:
    """The store behind ``url`` in words, for messages: the emulator's endpoint or the service,
    and the bucket."""
    scheme, rest = _split_url(url)
    bucket = f"{scheme}://{rest.split('/', 1)[0]}"
    if scheme in GCS_SCHEMES:
        host = emulator_host()
        return (
            f"{bucket} (the GCS emulator at {host})" if host else f"{bucket} (Google Cloud Storage)"
        )
    return bucket


class _Backoff:
    """One operation's retries: how long to wait after each transient failure, or
    StoreUnreachable once ``retry_seconds()`` have passed since the first."""

    def __init__(self, what: str, url: str):
        self.what, self.url = what, url
        self.first_failure: float | None = None
        self.delay, self.attempt = 1.0, 0

    def wait_after(self, error: Exception) -> float:
        """Seconds to wait before the next attempt (logged); re-raises ``error`` if it is not
        transient; raises StoreUnreachable past the limit."""
        if not is_transient(error):
            raise error
        now = time.monotonic()
        self.first_failure = now if self.first_failure is None else self.first_failure
        waited = now - self.first_failure
        if waited >= _Retry.seconds:
            raise StoreUnreachable(
                f"The object store {store_name(self.url)} did not answer {self.what} "
                f"{self.url} for {waited:.0f} s, past the limit of {_Retry.seconds:g} s "
                f"({_Retry.setting}); last error: {_short(error)}"
            ) from error
        self.attempt += 1
        wait = max(min(self.delay * (0.5 + random.random()), _Retry.seconds - waited), 0.0)
        self.delay = min(self.delay * 2, 30.0)
        log.warning(
            "%s %s failed (%s): retry %d in %.1f s (giving up %g s after the first failure, %s)",
            self.what,
            self.url,
            _short(error),
            self.attempt,
            wait,
            _Retry.seconds,
            _Retry.setting,
        )
        return wait

    def succeeded(self) -> None:
        if self.attempt:
            log.warning("%s %s succeeded after %d retries", self.what, self.url, self.attempt)


def retrying(call: Callable[[], T], what: str, url: str) -> T:
    """``call()``, retried while it raises transient errors (``is_transient``), with exponential
    backoff (1 s doubling to 30 s, each wait drawn in [0.5, 1.5) of that: jitter, so that many
    processes do not retry in step) for up to ``retry_seconds()`` from the first failure.

    Each retry is logged once as a warning naming ``what`` and ``url``. Past the limit raises
    StoreUnreachable naming the store, the operation, the limit and its config key. A single
    attempt may itself take a while (gcsfs retries a request 6 times, about 30 s, before it
    raises), so the limit is checked between attempts and may be passed by that much.
    """
    backoff = _Backoff(what, url)
    while True:
        try:
            result = call()
        except Exception as e:
            time.sleep(backoff.wait_after(e))
            continue
        backoff.succeeded()
        return result


def _request_url(path: str, args: tuple) -> str:
    """A gcsfs request's object as a URL (``gs://bucket/name``), for messages."""
    try:
        text = path.format(*args)
    except (IndexError, KeyError):
        text = path
    if text.startswith("b/"):
        bucket, _, rest = text[2:].partition("/")
        return f"gs://{bucket}/{rest[2:] if rest.startswith('o/') else ''}"
    return text


def _use_retrying_gcsfs() -> None:
    """Makes fsspec's gs:// and gcs:// the ``_retrying_gcsfs`` of the class registered now."""
    registered = fsspec.get_filesystem_class("gs")
    if getattr(registered, "retries_transient_errors", False):
        return
    retrying_class = _retrying_gcsfs(registered)
    for scheme in GCS_SCHEMES:
        fsspec.register_implementation(scheme, retrying_class, clobber=True)
    _clear_epath_cache()  # etils keeps the file system it made first


def _retrying_gcsfs(base: type) -> type:
    """``base`` (a gcsfs file system class) with every request retried as ``retrying`` does.

    Every gcsfs request goes through ``_call``, so this reaches what orbax does through etils.
    epath (step directories, metadata, commit_success.txt, in its background save thread) as well
    as this module's calls, which a store outage would otherwise fail once gcsfs's own retries
    (about 30 s) are spent.
    """

    class RetryingGCSFileSystem(base):
        retries_transient_errors = True

        async def _call(self, method, path, *args, **kwargs):
            backoff = _Backoff(f"{method} request", _request_url(path, args))
            while True:
                try:
                    result = await super()._call(method, path, *args, **kwargs)
                except Exception as e:
                    await asyncio.sleep(backoff.wait_after(e))
                    continue
                backoff.succeeded()
                return result

    RetryingGCSFileSystem.__name__ = RetryingGCSFileSystem.__qualname__ = f"Retrying{base.__name__}"
    return RetryingGCSFileSystem


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:300]}"


class _RetryingFileSystem:
    """An fsspec file system whose every call is ``retrying``. ``exists``, ``isfile`` and
    ``isdir`` ask ``info`` and take only FileNotFoundError for "no": fsspec's own versions
    answer False on any error, so a store that does not answer would look empty (and an
    append would then rewrite a file with its new lines only)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, url: str):
        self.fs, self.url = fs, url

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.fs, name)
        if not callable(method):
            return method
        return lambda *args, **kwargs: retrying(
            lambda: method(*args, **kwargs), f"{name}()", self.url
        )

    def _info(self, path: str) -> dict[str, Any] | None:
        try:
            return self.info(path)
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        return self._info(path) is not None

    def isfile(self, path: str) -> bool:
        info = self._info(path)
        return info is not None and info["type"] == "file"

    def isdir(self, path: str) -> bool:
        info = self._info(path)
        return info is not None and info["type"] == "directory"


# ----------------------------------------------------------------------------- queries


def exists(path: PathLike) -> bool:
    """Whether a file or directory (for a URL, an object or a non-empty prefix) is there."""
    path = os.fspath(path)
    if not is_url(path):
        return os.path.exists(path)
    fs, p = _fs(path)
    try:
        return fs.exists(p)
    except (FileNotFoundError, PermissionError):
        return False


def isfile(path: PathLike) -> bool:
    """Whether ``path`` is a file (an object)."""
    path = os.fspath(path)
    if not is_url(path):
        return os.path.isfile(path)
    fs, p = _fs(path)
    try:
        return fs.isfile(p)
    except (FileNotFoundError, PermissionError):
        return False


def isdir(path: PathLike) -> bool:
    """Whether ``path`` is a directory; for a URL, a bucket or a prefix of some object's name
    followed by "/" (so an empty "directory" on an object store is not one)."""
    path = os.fspath(path)
    if not is_url(path):
        return os.path.isdir(path)
    fs, p = _fs(path)
    try:
        return fs.isdir(p)
    except (FileNotFoundError, PermissionError):
        return False


def listdir(path: PathLike) -> list[str]:
    """The names (not paths) in directory ``path``, sorted.

    Raises FileNotFoundError if there is no such directory, NotADirectoryError for a file.
    """
    path = os.fspath(path)
    if not is_url(path):
        return sorted(os.listdir(path))
    fs, p = _fs(path)
    p = p.rstrip("/")
    try:
        entries = fs.ls(p, detail=True)
    except FileNotFoundError:
        raise _not_found(path) from None
    if len(entries) == 1 and entries[0]["type"] == "file" and entries[0]["name"].rstrip("/") == p:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    names = {posixpath.basename(e["name"].rstrip("/")) for e in entries}
    names.discard("")  # a "d/" placeholder object some tools make for a folder
    return sorted(names)


def walk(top: PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """Like ``os.walk(top)`` (top-down): yields ``(dirpath, dirnames, filenames)``, names sorted.

    Removing names from ``dirnames`` in place skips those directories, as with os.walk. A
    missing ``top`` yields nothing. Local symbolic links to directories are followed. On an
    object store the whole tree is listed in one request (``find``), so the tree is a snapshot
    taken at the first ``next()``.
    """
    top = os.fspath(top)
    if not is_url(top):
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            dirnames.sort()
            filenames.sort()
            yield dirpath, dirnames, filenames
        return
    fs, root = _fs(top)
    root = root.rstrip("/")
    try:
        if not fs.isdir(root):
            return
        found = fs.find(root, withdirs=True, detail=True)
    except FileNotFoundError:
        return
    children: dict[str, tuple[set[str], set[str]]] = {root: (set(), set())}
    for name, info in found.items():
        name = name.rstrip("/")
        if name == root or not name.startswith(root + "/"):
            continue
        parts = name[len(root) + 1 :].split("/")
        parent = root
        for i, part in enumerate(parts):  # every level, in case a listing omits a directory
            is_last = i == len(parts) - 1
            kind = 1 if is_last and info["type"] != "directory" else 0
            children.setdefault(parent, (set(), set()))[kind].add(part)
            parent = parent + "/" + part
            if not is_last:
                children.setdefault(parent, (set(), set()))
    base = top.rstrip("/")

    def visit(key: str, shown: str) -> Iterator[tuple[str, list[str], list[str]]]:
        dirs, files = children.get(key, (set(), set()))
        dirnames, filenames = sorted(dirs), sorted(files - dirs)
        yield shown, dirnames, filenames
        for d in dirnames:
            yield from visit(key + "/" + d, shown + "/" + d)

    yield from visit(root, base)


def glob(pattern: PathLike) -> list[str]:
    """Paths matching ``pattern`` (``*``, ``?``, ``[...]``, and ``**`` for any depth), sorted."""
    pattern = os.fspath(pattern)
    if not is_url(pattern):
        return sorted(_glob.glob(pattern, recursive=True))
    fs, p = _fs(pattern)
    scheme, _ = _split_url(pattern)
    return sorted(f"{scheme}://{m}" for m in fs.glob(p))


# ----------------------------------------------------------------------------- changes


def makedirs(path: PathLike) -> None:
    """Creates directory ``path`` and its parents (no error if there). A no-op on an object
    store, where a directory exists once an object is written under it."""
    path = os.fspath(path)
    if not is_url(path):
        os.makedirs(path, exist_ok=True)


def _makedirs_for(path: str) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)


def remove(path: PathLike) -> None:
    """Deletes file ``path``. FileNotFoundError if missing, IsADirectoryError for a directory."""
    path = os.fspath(path)
    if not is_url(path):
        os.remove(path)
        return
    fs, p = _fs(path)
    if not fs.isfile(p):
        if fs.isdir(p):
            raise IsADirectoryError(errno.EISDIR, "Is a directory (use rmtree)", path)
        raise _not_found(path)
    fs.rm_file(p)


def rmtree(path: PathLike, missing_ok: bool = False) -> None:
    """Deletes directory ``path`` and everything under it.

    A missing ``path`` raises FileNotFoundError, or does nothing with ``missing_ok=True``; a file
    raises NotADirectoryError. Refuses a whole bucket (``gs://b``): delete prefixes in it.
    """
    path = os.fspath(path)
    if not is_url(path):
        if missing_ok and not os.path.lexists(path):
            return
        shutil.rmtree(path)
        return
    fs, p = _fs(path)
    p = p.rstrip("/")
    if "/" not in p:
        raise ValueError(f"rmtree({path!r}) would delete the whole bucket; pass a prefix in it")
    if not fs.isdir(p):
        if fs.isfile(p):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory (use remove)", path)
        if missing_ok:
            return
        raise _not_found(path)
    fs.rm(p, recursive=True)


def replace(src: PathLike, dst: PathLike) -> None:
    """Moves file ``src`` to ``dst``, replacing ``dst`` if it exists.

    Local to local: ``os.replace``, atomic on one file system. Otherwise the data is copied (on
    one object store, by the server) and then ``src`` deleted: a reader sees the old ``dst`` or
    the new one, never a mix, but for a moment both ``src`` and ``dst`` exist. Files only on
    object stores (IsADirectoryError for a prefix).
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if not is_url(src) and not is_url(dst):
        os.replace(src, dst)
        return
    if isdir(src):
        raise IsADirectoryError(errno.EISDIR, "replace() moves files only", src)
    if not isfile(src):
        raise _not_found(src)
    if is_url(src) and is_url(dst) and _split_url(src)[0] == _split_url(dst)[0]:
        fs, s = _fs(src)
        _, d = _fs(dst)
        fs.copy(s, d)
        fs.rm_file(s)
        return
    write_bytes(dst, read_bytes(src))
    remove(src)


def move_tree(src: PathLike, dst: PathLike) -> None:
    """Moves directory ``src`` (and everything under it) to ``dst``, which must not exist.

    Local to local: ``os.replace``, atomic on one file system. On an object store each object is
    copied and then deleted, so an interrupted move leaves some objects at each place.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if exists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    if not is_url(src) and not is_url(dst):
        _makedirs_for(dst)
        os.replace(src, dst)
        return
    if not isdir(src):
        raise _not_found(src)
    for directory, _, names in walk(src):
        relative = directory[len(src.rstrip("/")) :].lstrip("/")
        for name in names:
            replace(join(directory, name), join(dst, relative, name))
    if exists(src):
        rmtree(src)


# ----------------------------------------------------------------------------- files


class _ObjectWriter(io.BytesIO):
    """Bytes for one object, uploaded whole on close; nothing is uploaded after an exception."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, url: str, initial: bytes = b""):
        super().__init__()
        self._fs, self._path, self._url, self._discard = fs, path, url, False
        self.name = url
        if initial:
            self.write(initial)

    def discard(self) -> None:
        self._discard = True

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._discard:
                try:
                    self._fs.pipe_file(self._path, self.getvalue())
                except FileNotFoundError:
                    raise _not_found(self._url) from None
        finally:
            super().close()

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.discard()
        self.close()


class _ObjectTextWriter(io.TextIOWrapper):
    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.buffer.discard()
        self.close()


def open(path: PathLike, mode: str = "r") -> IO:
    """A file object for ``path``; text modes use UTF-8.

    Modes: "r", "rb" (FileNotFoundError naming the path if missing), "w", "wb" (creating missing
    local parent directories), "a", "ab". On an object store a written file is uploaded whole
    when closed (not at all if its ``with`` block raises), and append reads the old object
    first and rewrites it: fine for small files such as metrics.jsonl.
    """
    path = os.fspath(path)
    if mode not in _MODES:
        raise ValueError(f"open({path!r}, mode={mode!r}): mode must be one of {_MODES}")
    binary = mode.endswith("b")
    if not is_url(path):
        if mode[0] in "wa":
            _makedirs_for(path)
        return builtins.open(path, mode, encoding=None if binary else "utf-8")
    fs, p = _fs(path)
    if mode[0] == "r":
        try:
            f = fs.open(p, "rb")
        except FileNotFoundError:
            raise _not_found(path) from None
        return f if binary else io.TextIOWrapper(f, encoding="utf-8")
    initial = b""
    if mode[0] == "a" and fs.isfile(p):
        initial = fs.cat_file(p)
    writer = _ObjectWriter(fs, p, path, initial)
    return writer if binary else _ObjectTextWriter(writer, encoding="utf-8")


def read_bytes(path: PathLike) -> bytes:
    """The whole file. FileNotFoundError naming ``path`` if missing."""
    path = os.fspath(path)
    if not is_url(path):
        with builtins.open(path, "rb") as f:
            return f.read()
    fs, p = _fs(path)
    try:
        return fs.cat_file(p)
    except FileNotFoundError:
        raise _not_found(path) from None


def read_text(path: PathLike) -> str:
    """The whole file decoded as UTF-8."""
    return read_bytes(path).decode("utf-8")


def write_bytes(path: PathLike, data: bytes) -> None:
    """Writes ``data`` as the whole of ``path``, atomically: a reader sees the old contents or the
    new, never part (locally via a temporary file and ``os.replace``)."""
    path = os.fspath(path)
    if is_url(path):
        fs, p = _fs(path)
        try:
            fs.pipe_file(p, bytes(data))
        except FileNotFoundError:
            raise _not_found(path) from None
        return
    _makedirs_for(path)
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with 0o666 lets the umask set the mode, as a plain open() would (mkstemp: 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) as the whole of ``path``, atomically (see write_bytes)."""
    write_bytes(path, text.encode("utf-8"))


def read_json(path: PathLike) -> Any:
    """The JSON value in ``path``."""
    return json.loads(read_text(path))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: PathLike, value: Any, indent: int | None = 2) -> None:
    """Writes ``value`` as JSON (``indent`` spaces per level, a final newline), atomically.

    NumPy scalars and arrays become numbers and lists; other values JSON does not know are
    written as their ``str()``.
    """
    write_text(path, json.dumps(value, indent=indent, default=_json_default) + "\n")


def save_npy(path: PathLike, array: Any) -> None:
    """Writes ``array`` (any shape and numeric dtype; no pickled objects) in .npy format,
    atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    write_bytes(path, buffer.getvalue())


def load_npy(path: PathLike) -> np.ndarray:
    """The array in .npy file ``path``, with its saved shape and dtype."""
    return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)


# ----------------------------------------------------------------------------- orbax


def checkpoint_directory(path: PathLike) -> epath.Path:
    """``path`` as the ``etils.epath.Path`` to give ``orbax.checkpoint.CheckpointManager``.

    A local path is made absolute; a ``gs://`` URL stays one. ``configure()`` runs first, so
    orbax's file operations (etils.epath) and array writes (tensorstore) go where this module's
    do: the emulator when STORAGE_EMULATOR_HOST is set, else Google through gcsfs.
    """
    configure()  # before orbax's first epath call, even for a local directory

    path = os.fspath(path)
    if is_url(path):
        scheme, rest = _split_url(path)
        if scheme in GCS_SCHEMES:
            _use_retrying_gcsfs()
        return epath.Path("gs://" + rest if scheme in GCS_SCHEMES else path)
    return epath.Path(os.path.abspath(path))


# ----------------------------------------------------------------------------- TensorBoard


def _tensorboard():
    """TensorBoard's event protos, the scalar summary and the record framing."""
    from tensorboard.compat.proto import event_pb2, summary_pb2  # heavy: only to write events
    from tensorboard.plugins.scalar import summary_v2  # heavy: only to write events
    from tensorboard.summary.writer.record_writer import RecordWriter  # heavy: only for events

    return event_pb2, summary_pb2, summary_v2, RecordWriter


class SummaryWriter:
    """Writes TensorBoard scalar events to a local directory or an object-store prefix.

    The file is TensorFlow's event format (TFRecord-framed ``Event`` protos, scalars as float32
    tensors with the "scalars" plugin's metadata, as ``tf.summary.scalar`` writes them), made
    with TensorBoard's own protos, without TensorFlow. Locally events are appended and flushed.
    On an object store the current file is kept in memory and uploaded whole on ``flush()``
    (also from ``scalars`` once ``flush_secs`` seconds have passed since the last, and on
    ``close``); once a file passes ``max_file_bytes`` a new one is started, so an upload stays
    small. TensorBoard reads every event file of a directory.
    """

    def __init__(self, logdir: PathLike, flush_secs: float = 30.0, max_file_bytes: int = 2**20):
        self.logdir = os.fspath(logdir)
        self.flush_secs = flush_secs
        self.max_file_bytes = max_file_bytes
        self.path = ""  # the event file being written
        self.closed = False
        self._lock = threading.Lock()
        self._url = is_url(self.logdir)
        self._files = 0
        self._local: IO[bytes] | None = None
        self._buffer = bytearray()
        self._dirty = False
        self._last_flush = time.monotonic()
        makedirs(self.logdir)
        self._start_file()

    def _start_file(self) -> None:
        event_pb2, _, _, _ = _tensorboard()
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{self._files:04d}"
        )
        self._files += 1
        self.path = join(self.logdir, name)
        if self._url:
            self._buffer = bytearray()
        else:
            if self._local is not None:
                self._local.close()
            self._local = builtins.open(self.path, "ab")
        self._append(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _append(self, event: Any) -> None:
        _, _, _, RecordWriter = _tensorboard()  # noqa: N806 (a class)
        record = io.BytesIO()
        RecordWriter(record).write(event.SerializeToString())
        if self._url:
            self._buffer.extend(record.getvalue())
        else:
            self._local.write(record.getvalue())
        self._dirty = True

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Logs ``value`` (a number, stored as float32) under ``tag`` at training ``step``."""
        self.scalars({tag: value}, step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Logs each ``tag: value`` (numbers, stored as float32) at training ``step``."""
        event_pb2, summary_pb2, summary_v2, _ = _tensorboard()
        if self.closed:
            raise ValueError(f"scalars() on the closed SummaryWriter of {self.logdir!r}")
        if not values:
            return
        summary = summary_pb2.Summary()
        for tag, value in values.items():
            summary.value.extend(summary_v2.scalar_pb(tag, float(value)).value)
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        with self._lock:
            self._append(event)
            if time.monotonic() - self._last_flush >= self.flush_secs:
                self._flush_locked()

    def flush(self) -> None:
        """Makes everything logged so far readable (an upload on an object store)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        if not self._dirty:
            return
        if self._url:
            write_bytes(self.path, bytes(self._buffer))
            self._dirty = False
            if len(self._buffer) >= self.max_file_bytes:
                self._start_file()
                self._dirty = False  # the new file goes up with its first events, not empty
        else:
            self._local.flush()
            self._dirty = False

    def close(self) -> None:
        """Flushes and closes; later calls do nothing."""
        if self.closed:
            return
        self.flush()
        if self._local is not None:
            self._local.close()
        self.closed = True

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def summary_writer(logdir: PathLike, **kwargs: Any) -> SummaryWriter:
    """A SummaryWriter for ``logdir`` (local or URL); kwargs: flush_secs, max_file_bytes."""
    return SummaryWriter(logdir, **kwargs)
