"""FAIR's self-supervision benchmark models (Caffe2 pickles) in the shared torch-style layout.

The released files (MODEL_ZOO.md) pickle ``{"blobs": {name: ndarray}, ...}`` with Caffe2 blob
names, as FAIR's model builders (``self_supervision_benchmark/modeling``) create them:

- ResNet-50 (supervised, Colorization): ``conv1_w``, BatchNorm ``res_conv1_bn_{s,b,rm,riv}``
  (scale, shift, running mean, running variance), ``res{2..5}_{i}_branch2{a,b,c}_w`` with
  ``..._bn_*``, and the projection shortcut ``res{S}_{i}_branch1_w`` / ``_branch1_bn_*``. The
  stride is on branch2b, the 3x3 (FAIR's ``resnet_model_helper.py``), as ssl_jax's default.
- Jigsaw pretext models hold the nine siamese towers: weights once as ``..._s0_w`` (towers 1-8
  share them) and BatchNorm blobs per tower (``res2_0_branch2a_bn_s3_rm``). Tower 0 is the one
  FAIR's evaluation graphs read; the other towers' copies are counted and dropped.
- AlexNet Jigsaw: ``conv{1..5}_s0_{w,b}``, BatchNorm ``conv{3,4,5}_s0_bn_*``, no LRN in FAIR's
  evaluation graph; AlexNet Colorization: ``conv{i}_{w,b}`` and ``conv{i}norm_*``. A conv bias
  followed by BatchNorm is folded into the BatchNorm's running mean (exact), since ssl_jax's
  convs before a BatchNorm have none.
- Detection pickles (FAIR's ``pickle_caffe2_detection.py``): every BatchNorm already folded into
  an affine ``_bn_s``/``_bn_b`` pair (no ``_rm``/``_riv``), and the input std absorbed into
  ``conv1_w`` (Detectron feeds ``BGR pixels - PIXEL_MEANS``). They import with running mean 0
  and variance ``1 - eps`` (an identity normalisation) and Detectron's input convention.

Caffe2 colour models read BGR; conv1's input channels are reversed here so the imported trunk
reads RGB like every ssl_jax trunk (the conversion is recorded in the workdir).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ssl_jax import paths

# Detectron's default PIXEL_MEANS (BGR, 0..255), which its detection training subtracts.
DETECTRON_PIXEL_MEANS_BGR = (102.9801, 115.9465, 122.7717)
BN_EPSILON = 1e-5  # FAIR's cfg.MODEL.BN_EPSILON, and the folding in pickle_caffe2_detection.py
_BOOKKEEPING = re.compile(r"(_momentum$|^lr$|^model_iter$|^epoch$|^iter$)")
_TOWER = re.compile(r"_s([0-8])(?=_)")


class FssbError(ValueError):
    """Not one of FAIR's Caffe2 pickles."""


def read(path: str) -> dict[str, np.ndarray]:
    """The blobs of a Caffe2 pickle (``{"blobs": ...}`` or a bare blob dict)."""
    raw = paths.read_bytes(path)
    try:
        data = pickle.loads(raw, encoding="latin1")
    except Exception as e:  # a truncated or foreign file fails in many ways inside pickle
        raise FssbError(
            f"{path} is not a readable Caffe2 pickle ({type(e).__name__}: {e}); check the "
            "download is complete (FAIR's files are listed in MODEL_ZOO.md)"
        ) from None
    blobs = data.get("blobs", data) if isinstance(data, dict) else None
    if not isinstance(blobs, dict) or not blobs:
        raise FssbError(
            f"{path} holds a {type(data).__name__}, not FAIR's {{'blobs': {{name: array}}}} dict"
        )
    out = {}
    for name, value in blobs.items():
        if _BOOKKEEPING.search(str(name)):
            continue
        if not isinstance(value, np.ndarray):
            raise FssbError(f"{path}: blob {name!r} is a {type(value).__name__}, not an array")
        out[str(name)] = value
    return out


def _towers(blobs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Tower 0 of a siamese Jigsaw model under plain names, and how many copies were dropped."""
    if not any(_TOWER.search(n) for n in blobs):
        return dict(blobs), 0
    out, dropped = {}, 0
    for name, value in blobs.items():
        tower = _TOWER.search(name)
        if tower is None:
            out[name] = value
        elif tower.group(1) == "0":
            out[_TOWER.sub("", name, count=1)] = value
        else:
            dropped += 1
    return out, dropped


def _bn(prefix: str, target: str, blobs: dict[str, np.ndarray], state: dict, affine: bool):
    scale, shift = blobs.pop(f"{prefix}_s", None), blobs.pop(f"{prefix}_b", None)
    mean, var = blobs.pop(f"{prefix}_rm", None), blobs.pop(f"{prefix}_riv", None)
    if scale is None or shift is None:
        return
    state[f"{target}.weight"], state[f"{target}.bias"] = scale, shift
    if affine:
        state[f"{target}.running_mean"] = np.zeros_like(scale)
        state[f"{target}.running_var"] = np.full_like(scale, 1.0 - BN_EPSILON)
    else:
        if mean is not None:
            state[f"{target}.running_mean"] = mean
        if var is not None:
            state[f"{target}.running_var"] = var


def to_torch_layout(
    blobs: Mapping[str, np.ndarray], arch: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Caffe2 blobs -> (torch-style state dict, facts about the source).

    Facts: ``towers_dropped`` (Jigsaw copies), ``affine_bn`` (a detection pickle), ``bgr`` (a
    colour conv1 was found, to be reversed), ``folded_biases`` (conv biases moved into BN).
    Unrecognised blobs stay under their Caffe2 names (heads: reported and dropped later).
    """
    blobs, dropped = _towers(blobs)
    affine = not any(n.endswith("_rm") or n.endswith("_riv") for n in blobs) and any(
        n.endswith("_bn_s") for n in blobs
    )
    state: dict[str, np.ndarray] = {}
    folded = []
    if arch == "resnet":
        if "conv1_w" in blobs:
            state["conv1.weight"] = blobs.pop("conv1_w")
        _bn("res_conv1_bn", "bn1", blobs, state, affine)
        for name in sorted(blobs):
            m = re.fullmatch(r"res(\d)_(\d+)_branch(2a|2b|2c|1)_w", name)
            if not m:
                continue
            stage, block, branch = int(m.group(1)), m.group(2), m.group(3)
            base = f"layer{stage - 1}.{block}"
            conv, bn = {
                "2a": ("conv1", "bn1"),
                "2b": ("conv2", "bn2"),
                "2c": ("conv3", "bn3"),
                "1": ("downsample.0", "downsample.1"),
            }[branch]
            state[f"{base}.{conv}.weight"] = blobs.pop(name)
            _bn(f"res{stage}_{block}_branch{branch}_bn", f"{base}.{bn}", blobs, state, affine)
    elif arch == "alexnet":
        for i in range(1, 6):
            weight, bias = blobs.pop(f"conv{i}_w", None), blobs.pop(f"conv{i}_b", None)
            if weight is None:
                continue
            state[f"conv{i}.weight"] = weight
            bn_prefix = next(
                (p for p in (f"conv{i}_bn", f"conv{i}norm") if f"{p}_s" in blobs), None
            )
            if bn_prefix is None:
                if bias is not None:
                    state[f"conv{i}.bias"] = bias
                continue
            _bn(bn_prefix, f"bn{i}", blobs, state, affine)
            if bias is not None and f"bn{i}.running_mean" in state:
                # BN(conv + b) with running mean m equals BN(conv) with running mean m - b.
                state[f"bn{i}.running_mean"] = state[f"bn{i}.running_mean"] - bias
                folded.append(f"conv{i}")
    else:
        raise FssbError(f"unknown architecture {arch!r}")
    bgr = "conv1.weight" in state and state["conv1.weight"].shape[1] == 3
    if bgr:
        state["conv1.weight"] = np.ascontiguousarray(state["conv1.weight"][:, ::-1])
    for name, value in blobs.items():  # what is left: heads, or blobs that do not map
        trunk_like = re.match(
            r"(res[2-5]_|res_conv1|conv1_)" if arch == "resnet" else r"conv[1-5](_|norm)", name
        )
        state[name if not trunk_like else f"unmapped.{name}"] = value
    facts = dict(towers_dropped=dropped, affine_bn=affine, bgr=bgr, folded_biases=folded)
    return state, facts
