"""Combining metric states across processes.

Every metric keeps a small state (a dict of CPU tensors) and can `merge` another instance's
state into its own. `gather_states` collects the states of all ranks with
`torch.distributed.all_gather_object` so that every rank ends up holding the same combined
state; on a single process (or without torch.distributed) it returns just the local state.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from avseg.distributed import is_distributed


def gather_states(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The states of all ranks, in rank order (just `[state]` on one process).

    The states are pickled by `all_gather_object`; with the NCCL backend the current CUDA device
    must be set (`torch.cuda.set_device(local_rank)`), as for any NCCL collective.
    """
    if not is_distributed():
        return [state]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, state)
    return gathered


class SyncedMetric:
    """Base of the metrics: `sync()` combines the `state()` of every rank with `merge()`.

    Subclasses provide `state()`, `merge(state)` and `reset()`, and set `self._synced = False`
    in `reset()`.
    """

    _synced: bool = False

    def sync(self) -> None:
        """Combine the statistics of all ranks (all_gather); a no-op on one process. Call once."""
        if self._synced:
            return
        states = gather_states(self.state())
        if len(states) > 1:
            self.reset()
            for state in states:
                self.merge(state)
        self._synced = True
