"""Training and evaluation: the loss step, the loops, distributed set-up, checkpoints."""
