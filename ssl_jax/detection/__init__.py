"""Object detection for the paper's third transfer benchmark: Fast / Faster R-CNN with a
ResNet-C4 body (PROTOCOLS.md, "Detection"), in JAX with static shapes."""
