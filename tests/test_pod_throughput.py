"""The pod arithmetic of benchmarks/pod_throughput.py against a computation by hand."""

from __future__ import annotations

import pytest

from benchmarks.pod_throughput import Host, run_estimate


def test_run_estimate_by_hand():
    host = Host(
        "host", accelerators=4, vcpus=100, peak_tflop_s=1.0, price_per_hour=10.0, price_note=""
    )
    # 4 x 1000 images/s asked for, 100 x 50 = 5000 offered: the accelerators set the pace.
    # 2,560,000 images = 10,000 steps of 256 = 10 checkpoints, 64 s apart; each blocks 2 s and
    # finishes 70 s after it started, 4 s after the next one is due: 6 s per checkpoint.
    run = run_estimate(host, 1000.0, 50.0, 2_560_000, save_blocks_s=2.0, save_complete_s=70.0)
    assert run["bound"] == "accelerators"
    assert run["cores_needed"] == pytest.approx(80.0)
    assert run["checkpoints"] == 10
    assert run["checkpoint_pause_s"] == pytest.approx(6.0)
    assert run["hours"] == pytest.approx((640.0 + 60.0) / 3600)
    assert run["cost_usd"] == pytest.approx(10.0 * 700.0 / 3600)
    # 60 cores give 3000 images/s: the input sets the pace, and the saves finish in time.
    fewer = Host("host", 4, 60, 1.0, 10.0, "")
    run = run_estimate(fewer, 1000.0, 50.0, 2_560_000, save_blocks_s=2.0, save_complete_s=70.0)
    assert run["bound"] == "input"
    assert run["images_per_s"] == pytest.approx(3000.0)
    assert run["checkpoint_pause_s"] == pytest.approx(2.0)
    assert run["hours"] == pytest.approx((2_560_000 / 3000 + 20.0) / 3600)
