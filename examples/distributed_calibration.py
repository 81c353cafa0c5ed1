"""Calibrate on two processes as if one had seen all the data: quantize() under torchrun.

    python examples/distributed_calibration.py       # starts itself under torchrun, 2 ranks
    torchrun --nproc-per-node 2 examples/distributed_calibration.py

Each rank calibrates on its own shard of the data (``DistributedSampler``); ``quantize()``
sees the process group and merges every observer across ranks, so both ranks convert to the
same program, and with min/max observers it is bit for bit the program one process
calibrated on all the data gives. Rank 0 checks exactly that and prints it; the other rank
prints nothing. (Without the merge, DDP-style buffer broadcasting would keep rank 0's
statistics only.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pt2e_quant import quantize


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def dataset() -> TensorDataset:
    """16 images whose scale grows with the index: each shard alone sees a narrower range."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 8, 8, generator=generator)
    return TensorDataset(images * torch.linspace(0.5, 4.0, 16).view(16, 1, 1, 1))


def quantized(calibration) -> nn.Module:
    torch.manual_seed(0)
    example = (torch.randn(4, 3, 8, 8),)
    return quantize(SmallNet().eval(), example, calibration=calibration, progress=False)


def main() -> None:
    data = dataset()
    probe = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    # the reference, before joining: once a process group exists, quantize() merges across it
    one_process = quantized([images for (images,) in DataLoader(data, batch_size=4)])
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    loader = DataLoader(data, batch_size=4, sampler=DistributedSampler(data, shuffle=False))
    result = quantized([images for (images,) in loader])  # this rank's shard only
    output = result.module(probe)
    gathered = [torch.empty_like(output) for _ in range(size)]
    dist.all_gather(gathered, output)
    if rank == 0:
        print(f"ranks: {size}, batches per rank: {list(result.merge.batches)}")
        print(f"every rank converted the same program: {all(g.equal(output) for g in gathered)}")
        same = one_process.module(probe).equal(output)
        print(f"equal to one process calibrated on all the data: {same}")
    dist.destroy_process_group()


if __name__ == "__main__":
    if "RANK" in os.environ:
        main()
    else:  # run plainly: start two ranks of this script under torchrun
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command = [*launcher, "--nproc-per-node", "2", os.path.abspath(__file__)]
        sys.exit(subprocess.call(command, env={**os.environ, "OMP_NUM_THREADS": "1"}))
