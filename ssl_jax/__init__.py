"""ssl_jax: self-supervised pretraining (Jigsaw, Colorization) and transfer benchmarks in JAX."""

__version__ = "0.1.0"
