"""Generation eval split across the ranks of a data-parallel run, then joined in row order.

Under DDP (or DeepSpeed ZeRO-1/2) every rank holds the whole model, so each can generate for its own contiguous
share of the eval rows with no collective call inside ``generate``; one ``all_gather_object`` per mode joins the
outputs. With sharded parameters (FSDP, ZeRO-3) every forward pass is collective and ranks would have to step in
lockstep, so those runs do not use this (the callback says so and skips).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RankGroup:
    """This process's place in the run: ``rank`` of ``world`` processes."""

    rank: int
    world: int

    @classmethod
    def current(cls) -> RankGroup | None:
        """The running process group, or None outside a multi-process run."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(dist.get_rank(), dist.get_world_size())
        return None

    def share(self, items: list) -> list:
        """This rank's contiguous slice; slices differ in length by at most one and join back in order."""
        n = len(items)
        return items[n * self.rank // self.world : n * (self.rank + 1) // self.world]

    def join(self, local: list) -> list:
        """Every rank's slice, concatenated in rank order (the original order); every rank must call this."""
        import torch.distributed as dist

        parts: list = [None] * self.world
        dist.all_gather_object(parts, local)
        return [item for part in parts for item in part]
