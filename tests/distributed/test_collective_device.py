"""Every collective tensor is placed by one helper: the CPU for gloo, the rank's current CUDA device
for NCCL (which moves only CUDA tensors). Checked on a CPU-only machine through the function that
picks the device from a backend name, and through a real one-rank gloo group."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from esper.distributed.group import DistributedSetupError, collective_device, collective_device_for

from .configs import free_port


def _cuda_index() -> int:
    return 3  # stands for torch.cuda.current_device() on a rank whose LOCAL_RANK is 3


@pytest.mark.parametrize("backend", ["gloo", "GLOO", "mpi", "cpu:gloo,cuda:nccl", "cuda:nccl,cpu:gloo"])
def test_cpu_backends_collect_on_the_cpu(backend: str) -> None:
    assert collective_device_for(backend, _cuda_index) == torch.device("cpu")


@pytest.mark.parametrize("backend", ["nccl", "cuda:nccl"])
def test_nccl_collects_on_the_current_cuda_device(backend: str) -> None:
    assert collective_device_for(backend, _cuda_index) == torch.device("cuda", 3)


@pytest.mark.parametrize("backend", ["", "carrier-pigeon", "xpu:xccl"])
def test_an_unknown_backend_is_named(backend: str) -> None:
    with pytest.raises(DistributedSetupError, match="backend"):
        collective_device_for(backend, _cuda_index)


def test_no_group_and_a_gloo_group_collect_on_the_cpu() -> None:
    assert collective_device() == torch.device("cpu")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        assert collective_device() == torch.device("cpu")
    finally:
        dist.destroy_process_group()


def test_rows_gathered_together_must_share_their_rows_and_fit_float64() -> None:
    from esper.growth_rl.rank_sync import gather_row_sets

    with pytest.raises(ValueError, match=r"tensor 1: expected 2 rows \(as tensor 0\), got shape \(3,\)"):
        gather_row_sets(torch.zeros(2, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"tensor 0: dtype torch\.int64 does not fit float64 exactly"):
        gather_row_sets(torch.zeros(2, dtype=torch.long))
