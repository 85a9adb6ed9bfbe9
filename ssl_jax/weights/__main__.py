"""Command line: ``python -m ssl_jax.weights import ...`` and ``... export ...``.

  import --format=FORMAT --model=MODEL SRC --workdir=W [--stride_in_1x1]
      FORMAT: fssb | vissl | torchvision | ssl_jax; MODEL: ARCH_TASK, ARCH in resnet18 ...
      resnet152, alexnet; TASK in jigsaw, colorization, supervised (ignored for ssl_jax, whose
      run says it). W then works as --config.pretrained=W in every benchmark.
  export W --format=torchvision|detectron2 --out=F [--step=N]

Exit status 0 on success, 2 when the checkpoint, model or format is refused (the message says
why, with a table of the tensors that failed); nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from ssl_jax.weights import exports, imports


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ssl_jax.weights", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="a checkpoint of another framework -> an ssl_jax workdir")
    imp.add_argument("src", help="the checkpoint file (or, for --format=ssl_jax, a workdir)")
    imp.add_argument("--format", required=True, help=" | ".join(imports.FORMATS))
    imp.add_argument("--model", default="", help="ARCH_TASK, e.g. resnet50_jigsaw")
    imp.add_argument("--workdir", required=True, help="the new workdir (local or gs://)")
    imp.add_argument(
        "--stride_in_1x1",
        action="store_true",
        help="bottleneck stride on the 1x1 conv (Detectron's MSRA models); FAIR's: on the 3x3",
    )
    exp = sub.add_parser("export", help="an ssl_jax run's trunk -> torchvision or Detectron2")
    exp.add_argument("workdir")
    exp.add_argument("--format", required=True, help=" | ".join(exports.FORMATS))
    exp.add_argument("--out", required=True, help="the file to write")
    exp.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "import":
            if args.format != "ssl_jax" and not args.model:
                raise imports.ImportFailed("--model=ARCH_TASK is required, e.g. resnet50_jigsaw")
            record = imports.import_checkpoint(
                args.format, args.model, args.src, args.workdir, stride_in_1x1=args.stride_in_1x1
            )
        else:
            record = exports.export(args.workdir, args.format, args.out, args.step)
    except (imports.ImportFailed, exports.ExportFailed) as e:
        print(f"{args.command} failed, nothing written: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"{args.command} failed: {e}", file=sys.stderr)
        return 2
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
