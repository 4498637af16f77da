"""Where this process stands in a torch.distributed job: the one place that asks.

Every layer (data samplers, model losses and codebooks, metrics, the trainer) asks these; the
process-group set-up for `torchrun` is `avseg.engine.distributed`.
"""

from __future__ import annotations

import torch.distributed as dist


def initialized() -> bool:
    """torch.distributed is available and its process group is up."""
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """(world size, rank): (1, 0) outside a process group."""
    return (dist.get_world_size(), dist.get_rank()) if initialized() else (1, 0)


def is_distributed() -> bool:
    """A process group with more than one rank."""
    return initialized() and dist.get_world_size() > 1
