"""Pretraining: the trainer, its optimizer, checkpoints and metrics."""

from ssl_jax.train.trainer import TrainingDiverged, train

__all__ = ["TrainingDiverged", "train"]
