"""Training on several processes with PyTorch's DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc_per_node N -m svhn_vae train ...`` starts N copies of the command; each reads
its rank from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK) and :func:`setup`
joins the process group: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPU.
Without those variables (a plain ``svhn-vae train``) nothing changes: one process, world size 1.

How the loop uses it (``train.py``):

* every rank draws the same seeded batch order; each global batch of ``batch_size`` examples is
  split across the ranks (rank r takes every N-th example from r), and DDP averages the
  gradients, so N processes take the same steps as one with the same global batch;
* the loss sums of an epoch are added up over the ranks, so every rank logs the same metrics;
* rank 0 alone holds the run folder's lock and writes config, metrics, checkpoints and figures;
  every rank reads the checkpoint on ``--resume``;
* a pause for a checkpoint (time, steps or a signal) is agreed by all ranks before anyone stops;
* BatchNorm's running statistics are per rank during an epoch (DDP copies rank 0's into every
  rank at each forward pass) and rank 0's after it, before validation and checkpoints;
* ``--sync-batchnorm`` makes BatchNorm use the statistics of the whole global batch (CUDA only:
  PyTorch's SyncBatchNorm has no CPU implementation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn

from svhn_vae.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch of indices."""
        return idx[self.rank::self.size] if self.active else idx

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor added up over all ranks (a copy; itself when alone)."""
        if not self.active:
            return tensor
        total = tensor.clone()
        torch_dist.all_reduce(total)
        return total

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when it is True on some rank."""
        if not self.active:
            return flag
        return bool(self.sum(torch.tensor([float(flag)], device=device)) > 0)

    def copy_buffers_from_main(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm's running statistics, which each rank updated
        from its own share of the last batch), so evaluation and early stopping agree everywhere."""
        if self.active:
            for buffer in model.buffers():
                torch_dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()


def launched_rank() -> int:
    """The rank torchrun gave this process (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when torchrun launched several processes; returns this process's
    World and its device (``cuda:LOCAL_RANK`` on CUDA)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(torch_dist.get_rank(), torch_dist.get_world_size()), device


def wrap(model: nn.Module, world: World, *, sync_batchnorm: bool) -> nn.Module:
    """The model DDP-wrapped (with SyncBatchNorm if asked) when there are several ranks, else itself."""
    if not world.active:
        return model
    if sync_batchnorm:
        if next(model.parameters()).device.type != "cuda":
            raise UserError("--sync-batchnorm needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only); on CPUs "
                            "leave it off: each process then normalises its share of every batch")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model)


def shutdown() -> None:
    """Leave the process group (at the end of a distributed run)."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()
