"""An ssl_jax run's trunk -> a torchvision state dict or a Detectron2 checkpoint.

torchvision: ``{name: tensor}`` in torchvision's ResNet names without ``fc`` (load it with
``model.load_state_dict(sd, strict=False)``), RGB conv1, for inputs normalised as the run's
``config.input`` says (ImageNet mean/std for ssl_jax's own runs). Written in torch's file
format without needing torch (ssl_jax.weights.torchfile).

Detectron2: a pickle ``{"model": {name: ndarray}, "__author__": "ssl_jax",
"matching_heuristics": True}`` in Detectron2's ResNet names (``stem.conv1.weight``,
``stem.conv1.norm.*``, ``res2.0.conv1.weight``, ``res2.0.conv1.norm.*``, ``res2.0.shortcut.*``,
``res5.*``; with matching heuristics Detectron2 finds res5 under the C4 ROI head). As Detectron2's
models read them: conv1's input channels in BGR order and the input std folded into conv1
(weights divided by 255 * std), so Detectron2 takes ``INPUT.FORMAT: BGR``, ``PIXEL_MEAN`` = 255 x
the run's mean (BGR) and ``PIXEL_STD: [1, 1, 1]`` (configs/detectron2/ has the paper's VOC07 runs).
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import jax
import numpy as np

from ssl_jax import paths
from ssl_jax.evals import features
from ssl_jax.train import state as state_lib
from ssl_jax.weights import layout, torchfile

_log = logging.getLogger(__name__)

FORMATS = ("torchvision", "detectron2")


class ExportFailed(ValueError):
    """The run cannot be exported to that format; nothing was written."""


def _trunk_state(workdir: str, step: int | None) -> tuple[Any, dict[str, np.ndarray]]:
    config, _, _, variables = state_lib.restore_variables(workdir, step)
    trunk = features.trunk_variables(variables)
    return config, layout.from_variables(jax.tree.map(np.asarray, trunk))


def _check_resnet(config: Any, fmt: str) -> None:
    model = config.model
    if model.name != "resnet":
        raise ExportFailed(
            f"--format={fmt} takes ResNet trunks; this run's trunk is {model.name!r} (its weights "
            "are read by ssl_jax's own benchmarks)"
        )
    if model.get("stride_in_1x1", False) and fmt == "torchvision":
        raise ExportFailed(
            "this trunk strides on the bottleneck's 1x1 conv (model.stride_in_1x1=True); "
            "torchvision's ResNet strides on the 3x3, so its forward would differ. Export to "
            "--format=detectron2 and set MODEL.RESNETS.STRIDE_IN_1X1: True there."
        )


def _rgb_conv1(config: Any, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if config.input.get("channel_order", "rgb") == "bgr":
        state = dict(state)
        state["conv1.weight"] = np.ascontiguousarray(state["conv1.weight"][:, ::-1])
    return state


def export(workdir: str, fmt: str, out: str, step: int | None = None) -> dict[str, Any]:
    """Writes the trunk of ``workdir`` (checkpoint ``step``, None the latest) to ``out``.

    Returns what a user of the file must know (input convention, settings); also logged.

    Raises:
      ExportFailed: an unknown format, or a trunk the format cannot hold.
    """
    if fmt not in FORMATS:
        raise ExportFailed(f"--format={fmt!r} is not one of {list(FORMATS)}")
    config, state = _trunk_state(workdir, step)
    _check_resnet(config, fmt)
    state = _rgb_conv1(config, state)
    mean = np.asarray(config.input.mean, np.float64)
    std = np.asarray(config.input.std, np.float64)
    channels = state["conv1.weight"].shape[1]
    info: dict[str, Any] = {"format": fmt, "out": out, "input_channels": int(channels)}
    if fmt == "torchvision":
        torchfile.save(state, out)
        info["input"] = (
            f"RGB, (img / 255 - mean) / std with mean={mean.tolist()} std={std.tolist()}"
            if channels == 3
            else "the L channel as ssl_jax's Colorization: L * 100 / 255 - 50 (conv1 takes 1 "
            "channel: build torchvision's model with conv1 = Conv2d(1, ...))"
        )
        if config.model.get("res5_stride", 2) == 1:
            info["res5"] = (
                "res5 at stride 1 (set layer4[0].conv2.stride and layer4[0].downsample[0].stride "
                f"to 1; dilation {config.model.get('res5_dilation', 1)})"
            )
    else:
        if channels != 3:
            raise ExportFailed(
                "Detectron2's R50 reads colour images; this trunk takes "
                f"{channels} input channel (Colorization's L) and cannot be used there"
            )
        d2 = {}
        conv1 = state["conv1.weight"] / (255.0 * std)[None, :, None, None]
        state = dict(state, **{"conv1.weight": np.ascontiguousarray(conv1[:, ::-1])})
        for name, value in state.items():
            d2[_detectron2_name(name)] = np.asarray(value, np.float32)
        payload = {"model": d2, "__author__": "ssl_jax", "matching_heuristics": True}
        paths.write_bytes(out, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        info["detectron2"] = {
            "INPUT.FORMAT": "BGR",
            "MODEL.PIXEL_MEAN": [round(255.0 * m, 4) for m in mean[::-1]],
            "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
            "MODEL.RESNETS.STRIDE_IN_1X1": bool(config.model.get("stride_in_1x1", False)),
            "MODEL.RESNETS.DEPTH": int(config.model.depth),
        }
    _log.info("exported %s to %s: %s", workdir, out, info)
    return info


def _detectron2_name(name: str) -> str:
    """torchvision ResNet name -> Detectron2's."""
    parts = name.split(".")
    if parts[0] == "conv1":
        return "stem.conv1." + parts[1]
    if parts[0] == "bn1":
        return "stem.conv1.norm." + parts[1]
    stage = f"res{int(parts[0][5:]) + 1}.{parts[1]}"
    rest = parts[2:]
    if rest[0] == "downsample":
        module = "shortcut" if rest[1] == "0" else "shortcut.norm"
        return f"{stage}.{module}.{rest[2]}"
    kind, index = rest[0][:-1], rest[0][-1]
    module = f"conv{index}" if kind == "conv" else f"conv{index}.norm"
    return f"{stage}.{module}.{rest[1]}"
