"""Supervised classification on the same trunks: the paper's supervised baseline."""
