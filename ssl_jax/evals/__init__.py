"""Transfer benchmarks on frozen features."""
