"""The model, train-step and evaluation code imports without TensorFlow.

Accelerator machines often carry JAX alone; TensorFlow is needed only where data is read. A
subprocess with tensorflow and tensorflow_datasets blocked imports the entry point, the loop,
pretraining, the evaluators, the path layer, the benchmarks and the linear-evaluation configs.
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["tensorflow"] = None
    sys.modules["tensorflow_datasets"] = None
    import ssl_jax.main, ssl_jax.evaluators, ssl_jax.train.pretrain, ssl_jax.train.loop
    import ssl_jax.tasks, ssl_jax.evals.linear, ssl_jax.evals.svm, ssl_jax.paths
    import benchmarks.train_step, benchmarks.linear, benchmarks.svm, benchmarks.soft_encode
    from ssl_jax import config_lib
    for name in ("imagenet_linear", "places205_linear", "linear"):
        config_lib.load_config(f"configs/evals/{name}.py:runlocal")
    assert "tensorflow" not in {m.split(".")[0] for m, v in sys.modules.items() if v}
    print("ok")
    """
)


def test_train_step_and_evals_import_without_tensorflow():
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
