"""Files on local disks or object stores (gs://, s3://, ...), for workdirs on either.

Local paths use Python's own functions; a URL goes through ``tf.io.gfile`` (TensorFlow is
already the input pipeline's engine), so a pod can keep its workdir in a bucket. Orbax writes
checkpoints to either by itself.
"""

from __future__ import annotations

import os
from typing import IO


def is_url(path: str) -> bool:
    return "://" in str(path)


def join(root: str, *parts: str) -> str:
    if is_url(root):
        return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(root, *parts)


def exists(path: str) -> bool:
    if is_url(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def isfile(path: str) -> bool:
    if is_url(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)
    return os.path.isfile(path)


def makedirs(path: str) -> None:
    if is_url(path):
        import tensorflow as tf

        tf.io.gfile.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def open_file(path: str, mode: str = "r") -> IO:
    """A file object; appending to an object-store file rewrites it (object stores have no
    append), which suits small files such as metrics.jsonl."""
    if is_url(path):
        import tensorflow as tf

        if "a" in mode:
            return _Appender(path, mode.replace("a", "w"))
        return tf.io.gfile.GFile(path, mode)
    return open(path, mode)


def replace(source: str, target: str) -> None:
    """Moves source over target (atomic on a local disk)."""
    if is_url(target):
        import tensorflow as tf

        tf.io.gfile.rename(source, target, overwrite=True)
    else:
        os.replace(source, target)


class _Appender:
    """Append mode for an object-store file: old content + new writes, written on close."""

    def __init__(self, path: str, mode: str):
        import tensorflow as tf

        self.path, self.mode = path, mode
        old = b"" if "b" in mode else ""
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path, "rb" if "b" in mode else "r") as f:
                old = f.read()
        self.chunks = [old]

    def write(self, data) -> None:
        self.chunks.append(data)

    def writelines(self, lines) -> None:
        self.chunks.extend(lines)

    def close(self) -> None:
        import tensorflow as tf

        if tf.io.gfile.exists(self.path):  # some file systems (ram://) append on "w"
            tf.io.gfile.remove(self.path)
        with tf.io.gfile.GFile(self.path, self.mode) as f:
            f.write(("" if "b" not in self.mode else b"").join(self.chunks))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
