"""Training: the one loop (loop.py), pretraining (pretrain.py), the state of a run (state.py),
its optimizer and schedule (optim.py), checkpoints (checkpoint.py) and metrics (metrics.py)."""
