"""Processes started by ``torchrun`` (torch.distributed): the rank and world from the launcher's
environment, the process group (gloo on CPU, nccl on GPUs, each rank on its ``LOCAL_RANK`` GPU),
a barrier and an all-gather of picklable objects. Used by the sharded corpus index build
(:mod:`lrp_llm.analyses.corpus_index`) and the sharded evaluation (``xai-tui evaluate``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch


def launched_world() -> tuple[int, int]:
    """``(rank, world)`` of this process as ``torchrun`` sets them (``(0, 1)`` outside torchrun)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Group:
    """This process's place in the run: ``rank`` of ``world`` processes."""

    rank: int
    world: int

    @property
    def root(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


@contextmanager
def process_group() -> Iterator[Group]:
    """The process group of a ``torchrun`` run for the block (nothing to set up for one process);
    on a machine with GPUs each rank uses the GPU of its ``LOCAL_RANK`` as ``cuda``."""
    rank, world = launched_world()
    cuda = torch.cuda.is_available()
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if cuda else "gloo")
    try:
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        yield Group(rank, world)
    finally:
        if world > 1:
            dist.destroy_process_group()


__all__ = ["Group", "launched_world", "process_group"]
