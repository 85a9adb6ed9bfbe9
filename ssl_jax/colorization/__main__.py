"""Colorization commands.

python -m ssl_jax.colorization priors --config=configs/colorize_r50.py[:arg] --out=PRIORS.npy
    [--images=N] [--config.key=value ...]
  Estimates the 313 ab bin priors from the config's pretraining data (the target-grid pixels of
  N colour images, smoothed as config.colorization.prior_smoothing) and writes PRIORS.npy with a
  summary beside it (PRIORS.json). Pass it to a run with --config.colorization.priors_file;
  without one, a run estimates its own at start-up and stores them in its workdir.
  With config.colorization.bin_size 5, 15 or 20 (``:bins=N``): FAIR's data bins of N images
  (ssl_jax.colorization.data_bins) and their priors, written as PRIORS.npy, PRIORS_bins.npy and
  PRIORS.json, for inspection (a run estimates and stores its own).

python -m ssl_jax.colorization show --workdir=W [--step=S] [--out=FILE.png] [--num=8]
    [--temperature=0.38]
  Writes a PNG grid for a few crops of the run's own training data: grayscale input |
  prediction (annealed mean) | ground truth, from the latest checkpoint (or step S). Default
  output: W/samples/show_step_S.png.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from ssl_jax import config_lib, paths, tasks  # noqa: E402
from ssl_jax.colorization import data_bins, picture  # noqa: E402
from ssl_jax.colorization import task as task_lib  # noqa: E402
from ssl_jax.colorization.bins import ZHANG_BIN_SIZE  # noqa: E402


def _priors(args, overrides) -> int:
    config = config_lib.load_config(args.config)
    config_lib.apply_overrides(config, overrides)
    tasks.validate(config)
    if config.task != "colorization":
        raise config_lib.ConfigError(
            f"{args.config} is a config.task={config.task!r} config; priors need a "
            "colorization config, e.g. configs/colorize_r50.py."
        )
    if task_lib.bin_size(config.colorization) != ZHANG_BIN_SIZE:
        bins, priors, summary = data_bins.estimate(config, args.images)
        task_lib.save_priors(args.out, priors, summary)
        bins_path = os.path.splitext(args.out)[0] + "_bins.npy"
        paths.save_npy(bins_path, bins)
        print(
            f"Wrote {args.out} and {bins_path}: {summary['bins']} bins of size "
            f"{summary['bin_size']} found in {summary['images']} images, and their priors."
        )
        return 0
    priors, summary = task_lib.estimate_priors(config, args.images)
    task_lib.save_priors(args.out, priors, summary)
    print(
        f"Wrote {args.out}: priors of {summary['bins_seen']} of 313 bins seen in "
        f"{summary['colour_images']} colour images ({summary['images']} read)."
    )
    return 0


def _show(args) -> int:
    temperature = picture.defaults().temperature if args.temperature is None else args.temperature
    out, step = picture.draw_run(
        args.workdir, args.out, step=args.step, images=args.num, temperature=temperature
    )
    print(f"Wrote {out}: grayscale input | prediction | ground truth, step {step}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_jax.colorization",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    priors = commands.add_parser("priors", help="estimate the ab bin priors of a config's data")
    priors.add_argument("--config", required=True)
    priors.add_argument("--out", required=True)
    priors.add_argument("--images", type=int, default=None, help="default: the config's")
    show = commands.add_parser("show", help="picture of a checkpoint's colourisations")
    show.add_argument("--workdir", required=True)
    show.add_argument("--step", type=int, default=None)
    show.add_argument("--out", default=None)
    show.add_argument("--num", type=int, default=8)
    show.add_argument("--temperature", type=float, default=None)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    overrides = []
    for item in rest:
        key, sep, value = item.removeprefix("--config.").partition("=")
        if args.command != "priors" or not item.startswith("--config.") or not sep:
            parser.error(f"unrecognised argument {item!r}")
        overrides.append((key, value))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("absl", "orbax", "jax._src", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    try:
        if args.command == "priors":
            return _priors(args, overrides)
        return _show(args)
    except (config_lib.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
