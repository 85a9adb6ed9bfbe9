"""Pretraining: the trainer, its optimizer, checkpoints and metrics."""

from ssl_jax.train.trainer import InputPipelineError, TrainingDiverged, train

__all__ = ["InputPipelineError", "TrainingDiverged", "train"]
