"""Times the two 8-bit sRGB -> Lab conversions of the Colorization task on this machine.

Usage:
  python benchmarks/lab_conversion.py [--rounds 20] [--out benchmarks/results/lab_conversion.json]

Rows (``config.colorization.lab``), each one jitted call on a batch of random uint8 RGB crops
already on the device, blocked until done:
  opencv       ``rgb_to_lab_8bit`` then ``lab_from_8bit`` (OpenCV's codes exactly, in Lab units),
  float        ``rgb_to_lab`` then ``quantize_8bit`` (the float conversion rounded to 8-bit),
  float, raw   ``rgb_to_lab`` alone (``quantize=False``),
and, for scale, ``cv2.cvtColor(..., COLOR_RGB2LAB)`` on the host (one thread per call, as a data
pipeline would run it), when OpenCV is installed. Batches: 32 x 224 x 224 (a training batch of
the ResNet-50 recipe) and 256 x 64 x 64 (the CIFAR recipe's crops, 8x the batch). Reported: the
best and median ms per call over ``--rounds`` calls after one warm-up call, and Mpixel/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import machine_info  # noqa: E402
from ssl_jax.colorization import lab as lab_lib  # noqa: E402

BATCHES = ((32, 224), (256, 64))
SIDES = {
    "opencv": lambda rgb: lab_lib.image_lab(rgb, "opencv"),
    "float": lambda rgb: lab_lib.image_lab(rgb, "float", quantize=True),
    "float, raw": lambda rgb: lab_lib.image_lab(rgb, "float", quantize=False),
}


def _time(call, rounds: int) -> list[float]:
    call()  # warm-up (and compilation)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(1e3 * (time.perf_counter() - start))
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/lab_conversion.json")
    args = parser.parse_args(argv)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        cv2 = None
    rows = []
    for batch, size in BATCHES:
        rgb = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        on_device = jax.device_put(rgb)
        pixels = batch * size * size
        for name, fn in SIDES.items():
            jitted = jax.jit(fn)
            times = _time(lambda f=jitted, x=on_device: f(x).block_until_ready(), args.rounds)
            rows.append((name, batch, size, pixels, times))
        if cv2 is not None:

            def host(images=rgb):
                for image in images:
                    cv2.cvtColor(image, cv2.COLOR_RGB2LAB)

            rows.append(("cv2 (host)", batch, size, pixels, _time(host, args.rounds)))
    info = machine_info()
    print(f"# {info['cpu']}, {info['cores']} cores, JAX {info['jax']} ({info['jax_backend']})")
    print("| conversion | batch | best ms | median ms | Mpixel/s (best) |")
    print("|---|---|---|---|---|")
    results = []
    for name, batch, size, pixels, times in rows:
        best, median = min(times), statistics.median(times)
        print(
            f"| {name} | {batch} x {size} x {size} | {best:.1f} | {median:.1f} | "
            f"{pixels / best / 1e3:.0f} |"
        )
        results.append(
            {"conversion": name, "batch": [batch, size, size], "best_ms": best,
             "median_ms": median, "times_ms": times}
        )  # fmt: skip
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": info, "rounds": args.rounds, "results": results}, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
