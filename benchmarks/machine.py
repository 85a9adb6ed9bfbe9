"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import datetime
import json
import os
import platform

import jax
import numpy as np


def machine_info() -> dict:
    """CPU model, cores, versions, JAX backend and devices, date, and the load at the start.

    Other processes may share the cores: a 1-minute load above the core count means the
    timings were inflated.
    """
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [d.device_kind for d in jax.devices()],
        "date": datetime.date.today().isoformat(),
    }
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def write_result(path: str, result: dict) -> None:
    """Writes a benchmark's result JSON (its folder created) and says where."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")
