"""Scores a detections file against a VOCdevkit split: VOC AP per class and mAP.

    python -m ssl_jax.evals.detection score --devkit=DIR/VOCdevkit/VOC2007 --split=test \\
        --detections=D.json --out=R.json [--classes=a,b] [--year=2007]

D.json is a JSON list of ``{"image_id", "class", "score", "box": [xmin, ymin, xmax, ymax]}`` in
VOC 1-based pixels (``write_detections``). R.json holds ``voc_eval.evaluate``'s result (APs in
percent) with the devkit, split and skipped counts; a markdown table is printed. Exit status 0,
or 2 with a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ssl_jax import paths
from ssl_jax.config_lib import ConfigError
from ssl_jax.detection import voc, voc_eval

_PROG = "python -m ssl_jax.evals.detection score"
_KEYS = ("image_id", "class", "score", "box")


def write_detections(path: str, detections: Sequence[Mapping[str, Any]]) -> None:
    """Writes detections as D.json (a JSON list, one detection a line), atomically."""
    lines = []
    for det in detections:
        row = {
            "image_id": str(det["image_id"]),
            "class": str(det["class"]),
            "score": float(det["score"]),
            "box": [float(v) for v in det["box"]],
        }
        lines.append(json.dumps(row))
    paths.write_text(path, "[\n" + ",\n".join(lines) + "\n]\n")


def read_detections(path: str) -> list[dict[str, Any]]:
    """The detections of D.json. ValueError naming the file and the first bad entry."""
    try:
        value = json.loads(paths.read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    if not isinstance(value, list):
        raise ValueError(
            f"{path} holds a {type(value).__name__}; it must be a JSON list of detections "
            f"{{{', '.join(_KEYS)}}}."
        )
    for k, det in enumerate(value):
        if not isinstance(det, dict) or any(key not in det for key in _KEYS):
            raise ValueError(
                f"{path}: entry {k} ({str(det)[:80]}) is not a detection with the keys "
                f"{', '.join(_KEYS)}."
            )
    return value


def markdown_table(result: Mapping[str, Any]) -> str:
    """The per-class APs and the means of ``voc_eval.evaluate``'s result as a markdown table."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    rows = ["| class | AP (11-point) | AP (all points) | boxes |", "|---|---:|---:|---:|"]
    for name, v in result["classes"].items():
        rows.append(
            f"| {name} | {number(v['ap'])} | {number(v['ap_all_points'])} | {v['num_gt']} |"
        )
    total = sum(v["num_gt"] for v in result["classes"].values())
    rows.append(
        f"| **mean** | **{number(result['mAP'])}** | **{number(result['mAP_all_points'])}** | "
        f"{total} |"
    )
    return "\n".join(rows)


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # a message and status 2, never a SystemExit
        raise _Usage(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--devkit", required=True, help="VOCdevkit/ or VOCdevkit/VOC<year>/")
    parser.add_argument("--split", required=True, help="ImageSets/Main list, e.g. test")
    parser.add_argument("--detections", required=True, help="D.json: a list of detections")
    parser.add_argument("--out", required=True, help="R.json: the result")
    parser.add_argument("--classes", default=None, help="a,b,...; default: those annotated")
    parser.add_argument("--year", default="2007", help="VOC year, to find VOC<year>/")
    parser.add_argument("--iou_threshold", type=float, default=0.5)
    return parser


def main(argv: Sequence[str]) -> int:
    """Runs the scorer on the arguments after "score"; returns the exit status."""
    try:
        args = _parser().parse_args(list(argv))
        classes = "auto" if args.classes is None else [c for c in args.classes.split(",") if c]
        dataset = voc.read_devkit(
            args.devkit, args.split, year=args.year, classes=classes, config_key="score"
        )
        detections = read_detections(args.detections)
        result = voc_eval.evaluate(
            detections, dataset.annotations, dataset.classes, iou_threshold=args.iou_threshold
        )
    except _Usage as e:
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:  # missing files, bad XML / JSON, ConfigError
        message = " ".join(str(e).split())
        if isinstance(e, ConfigError):  # it names config keys "score.<flag>"
            message += " (score.<name> is the flag --<name>; without --classes: those annotated)"
        print(f"{_PROG}: error: {message}", file=sys.stderr)
        return 2
    result = {
        **result,
        "devkit": args.devkit,
        "split": args.split,
        "detections": args.detections,
        "skipped": dataset.skipped,
    }
    paths.write_json(args.out, result)
    print(markdown_table(result))
    print(f"\n{len(detections)} detections on {dataset.num_images} images; wrote {args.out}")
    return 0
