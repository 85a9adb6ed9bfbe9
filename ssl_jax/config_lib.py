"""Config files, their argument strings, command-line overrides and validation.

A config file is Python: ``get_config(arg=None)`` returns a locked ``ml_collections.ConfigDict``.
On the command line it is named as ``path/to/config.py[:arg]`` where ``arg`` is a list of words
and ``key=value`` pairs separated by commas or colons, e.g.
``configs/jigsaw_r50.py:runlocal,perms=100``.
Single fields are then overridden with ``--config.optim.base_lr=0.05``.

Every check here runs before anything is compiled: an unknown key or a bad value stops the run
with a message naming the key, the allowed values and the closest valid key.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ml_collections


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message says how to fix it."""


# ---------------------------------------------------------------------------------------------
# Argument strings: "runlocal,perms=100" -> ConfigDict(runlocal=True, perms=100)


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses a config argument string against the keys and types given as ``defaults``.

    Words without ``=`` are boolean flags set to True (``runlocal``); ``key=value`` pairs are
    parsed as Python literals where possible and coerced to the default's type.

    Raises:
      ConfigError: for a key that is not in ``defaults`` (naming the closest one) or a value that
        cannot be converted to the default's type.
    """
    out = ml_collections.ConfigDict(dict(defaults))
    if not arg:
        return out
    for item in _split_arg(arg):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ConfigError(
                f"Unknown config argument {key!r} in {arg!r}. Allowed arguments: "
                f"{sorted(defaults)}.{_closest_hint(key, defaults)}"
            )
        if not sep:
            if not isinstance(defaults[key], bool):
                raise ConfigError(
                    f"Config argument {key!r} needs a value, e.g. {key}={defaults[key]!r}."
                )
            out[key] = True
            continue
        out[key] = _coerce(raw.strip(), defaults[key], where=f"config argument {key!r}")
    return out


def _split_arg(arg: str) -> list[str]:
    """Items separated by "," or ":", except the ":" of a URL's scheme (folder=gs://b/d)."""
    items: list[str] = []
    for part in re.split(r",|:(?!//)", arg):
        if part.strip():
            items.append(part.strip())
    return items


# ---------------------------------------------------------------------------------------------
# Loading a config file and applying --config.key=value overrides


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads ``path/to/config.py[:arg]`` and returns its locked ConfigDict."""
    path, arg = split_spec(spec)
    if not os.path.exists(path):
        raise ConfigError(f"Config file {path!r} does not exist (from --config={spec!r}).")
    module_spec = importlib.util.spec_from_file_location(f"ssl_jax_config_{abs(hash(path))}", path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"Cannot import config file {path!r}.")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"Config file {path!r} defines no get_config(arg=None).")
    config = module.get_config(arg) if arg is not None else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() of {path!r} returned {type(config).__name__}.")
    config.lock()
    return config


def split_spec(spec: str) -> tuple[str, str | None]:
    """'configs/a.py:runlocal' -> ('configs/a.py', 'runlocal')."""
    idx = spec.find(".py")
    if idx < 0:
        raise ConfigError(
            f"--config={spec!r} must name a .py config file, e.g. configs/jigsaw_r50.py."
        )
    path, rest = spec[: idx + 3], spec[idx + 3 :]
    if not rest:
        return path, None
    if not rest.startswith(":"):
        raise ConfigError(f"In --config={spec!r}, the config argument must follow a colon.")
    return path, rest[1:]


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """All leaf keys of a nested ConfigDict as dotted paths."""
    keys = []
    for key in config.keys():
        value = config[key]
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Iterable[tuple[str, str]]
) -> ml_collections.ConfigDict:
    """Applies ``(dotted_key, raw_value)`` pairs, e.g. ``("optim.base_lr", "0.05")``."""
    keys = flat_keys(config)
    for key, raw in overrides:
        if key not in keys:
            raise ConfigError(
                f"Unknown config key 'config.{key}'.{_closest_hint(key, keys, prefix='config.')} "
                f"Valid keys: {', '.join(_siblings(key, keys))}."
            )
        parent, _, leaf = key.rpartition(".")
        node = config
        for part in parent.split(".") if parent else []:
            node = node[part]
        current = node[leaf]
        value = _coerce(raw, current, where=f"--config.{key}")
        with config.unlocked():
            try:
                node[leaf] = value
            except TypeError as e:  # ml_collections' own type check
                raise ConfigError(
                    f"--config.{key}={raw!r}: {e}. Give a value of type {type(current).__name__}."
                ) from None
    return config


def _coerce(raw: str, current: Any, *, where: str) -> Any:
    """Parses ``raw`` into the type of ``current`` (the field's present value)."""
    if isinstance(current, bool):
        low = raw.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"{where}={raw!r} is not a boolean; use true or false.")
    if isinstance(current, str):
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            return raw[1:-1]
        return raw
    if raw.lower() == "none":
        return None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if current is None:
            return raw
        raise ConfigError(
            f"{where}={raw!r} is not a valid {type(current).__name__} (current value {current!r})."
        ) from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
        if value.is_integer():
            return int(value)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    if isinstance(current, tuple) and not isinstance(value, tuple):
        value = (value,)
    if current is not None and not isinstance(value, type(current)):
        if not (isinstance(current, float) and isinstance(value, int)):
            raise ConfigError(
                f"{where}={raw!r} has type {type(value).__name__}, expected "
                f"{type(current).__name__} (current value {current!r})."
            )
    return value


def _closest_hint(key: str, candidates: Iterable[str], prefix: str = "") -> str:
    candidates = list(candidates)
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not match:
        # Compare leaf names too: 'optim.lrr' vs 'optim.base_lr'.
        leaf = key.rpartition(".")[2]
        by_leaf = {c.rpartition(".")[2]: c for c in candidates}
        leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.5)
        match = [by_leaf[leaf_match[0]]] if leaf_match else []
    return f" Closest valid key: '{prefix}{match[0]}'." if match else ""


def _siblings(key: str, keys: Sequence[str]) -> list[str]:
    parent = key.rpartition(".")[0]
    same = [k for k in keys if k.rpartition(".")[0] == parent]
    return same or sorted({k.partition(".")[0] for k in keys})


# ---------------------------------------------------------------------------------------------
# Validation: allowed values per key, and constraints between keys.

Check = Callable[[Any], bool]


def one_of(*values: Any) -> tuple[Check, str]:
    return (lambda v: v in values), f"one of {list(values)}"


def in_range(lo: float, hi: float, integer: bool = False) -> tuple[Check, str]:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if integer and not float(v).is_integer():
            return False
        return lo <= v <= hi

    kind = "an integer" if integer else "a number"
    return check, f"{kind} in [{lo}, {hi}]"


def positive(integer: bool = False) -> tuple[Check, str]:
    return in_range(1 if integer else 1e-30, float("inf"), integer)


def non_negative(integer: bool = False) -> tuple[Check, str]:
    return in_range(0, float("inf"), integer)


def optional(check: tuple[Check, str]) -> tuple[Check, str]:
    fn, text = check
    return (lambda v: v is None or fn(v)), f"None or {text}"


def increasing_numbers() -> tuple[Check, str]:
    def check(v):
        return (
            isinstance(v, tuple)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            and all(a < b for a, b in zip(v, v[1:], strict=False))
        )

    return check, "a tuple of increasing numbers"


# Allowed values of the fields every pretraining config shares. Task configs add their own via
# the ``extra`` argument of ``validate``.
SCHEMA: dict[str, tuple[Check, str]] = {
    "seed": non_negative(integer=True),
    "data.source": one_of("tfds", "folder", "filelist", "demo"),
    "data.shuffle_buffer": positive(integer=True),
    "data.prefetch": non_negative(integer=True),
    "data.demo_size": positive(integer=True),
    "data.data_size": (
        lambda v: (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and 0 <= v < float("inf")
            and (v <= 1 or float(v).is_integer())
        ),
        "0 (all images), a fraction in (0, 1], or an integer count > 1",
    ),
    "input.resize_short": positive(integer=True),
    "input.crop": positive(integer=True),
    "model.name": one_of("resnet", "alexnet"),
    "model.depth": one_of(18, 34, 50, 101, 152),
    "model.width": in_range(1 / 64, 16),
    "model.bn_group_size": optional(positive(integer=True)),
    "model.res5_stride": one_of(1, 2),
    "model.res5_dilation": one_of(1, 2),
    "input.channel_order": one_of("rgb", "bgr"),
    "model.dtype": one_of("auto", "float32", "bfloat16", "float16"),
    "optim.batch_size": positive(integer=True),
    "optim.base_lr": positive(),
    "optim.base_batch_size": positive(integer=True),
    "optim.momentum": in_range(0, 1),
    "optim.weight_decay": non_negative(),
    "optim.warmup_epochs": non_negative(),
    "optim.warmup_start_lr": non_negative(),
    "optim.epochs": positive(),
    "optim.decay_epochs": increasing_numbers(),
    "optim.decay_factor": in_range(0, 1),
    "train.log_every": positive(integer=True),
    "train.checkpoint_every": positive(integer=True),
    "train.keep_checkpoints": positive(integer=True),
    "train.store_retry_seconds": non_negative(),
    "train.stop_after_steps": optional(positive(integer=True)),
}


def validate(
    config: ml_collections.ConfigDict,
    extra: dict[str, tuple[Check, str]] | None = None,
) -> None:
    """Checks every known field's value; raises ConfigError naming the key and allowed values."""
    schema = dict(SCHEMA)
    schema.update(extra or {})
    keys = set(flat_keys(config))
    for key, (check, allowed) in schema.items():
        if key not in keys:
            continue
        value = get_path(config, key)
        if not check(value):
            raise ConfigError(
                f"config.{key}={value!r} is not allowed: it must be {allowed}. "
                f"Set it with --config.{key}=..."
            )
    if "data.source" in keys and config.data.source in ("folder", "filelist"):
        if not config.data.path:
            example = "/path/to/images" if config.data.source == "folder" else "/path/to/list.txt"
            raise ConfigError(
                f"config.data.source={config.data.source!r} needs config.data.path: "
                f"--config.data.path={example}"
            )
    if "input.crop" in keys and config.input.crop > config.input.resize_short:
        raise ConfigError(
            f"config.input.crop={config.input.crop} is larger than "
            f"config.input.resize_short={config.input.resize_short}; the crop must fit in the "
            "resized image."
        )
    if "optim.decay_epochs" in keys and config.optim.decay_epochs:
        if config.optim.decay_epochs[-1] > config.optim.epochs:
            raise ConfigError(
                f"config.optim.decay_epochs={config.optim.decay_epochs} has a step after "
                f"config.optim.epochs={config.optim.epochs}."
            )
    if "optim.warmup_epochs" in keys and config.optim.decay_epochs:
        warmup, first_decay = config.optim.warmup_epochs, config.optim.decay_epochs[0]
        if warmup > 0 and warmup >= first_decay:
            raise ConfigError(
                f"config.optim.warmup_epochs={warmup} ends at or after the first decay in "
                f"config.optim.decay_epochs={config.optim.decay_epochs}: the learning rate would "
                "climb to its peak and drop at once, never training at the peak. Shorten the "
                "warm-up (--config.optim.warmup_epochs=0 for none) or move the first decay."
            )
    if "model.res5_dilation" in keys and config.model.res5_dilation != 1:
        if config.model.get("res5_stride", 2) != 1:
            raise ConfigError(
                f"config.model.res5_dilation={config.model.res5_dilation} needs "
                "config.model.res5_stride=1 (dilation replaces the stride res5 gives up)."
            )
    if "model.bn_group_size" in keys and config.model.bn_group_size:
        if config.optim.batch_size % config.model.bn_group_size:
            raise ConfigError(
                f"config.optim.batch_size={config.optim.batch_size} is not a multiple of "
                f"config.model.bn_group_size={config.model.bn_group_size}: BatchNorm statistics "
                "are computed over fixed-size groups of images. Change one of them."
            )
    if config.train.checkpoint_every % config.train.log_every:
        raise ConfigError(
            f"config.train.checkpoint_every={config.train.checkpoint_every} must be a multiple of "
            f"config.train.log_every={config.train.log_every} (a checkpoint is written only after "
            "the losses before it were checked to be finite)."
        )


def get_path(config: ml_collections.ConfigDict, key: str) -> Any:
    node = config
    for part in key.split("."):
        node = node[part]
    return node
