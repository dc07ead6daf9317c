"""Process-group set-up for ``torchrun`` (gloo on CPU, NCCL on GPU) and single-process runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist

from jepactl.errors import ConfigError, JepactlError
from jepactl.utils import available_cpus

T = TypeVar("T")


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    control_group: dist.ProcessGroup | None = None  # CPU group for control messages

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when visible), ``cpu``, ``cuda`` (this rank's GPU) or ``cuda:i``; a
    :class:`ConfigError` for an unknown device or CUDA that is not there."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{preference}' asked for, but no CUDA device is visible")
        if preference == "cuda":
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank)
    try:
        return torch.device(preference)
    except RuntimeError:
        raise ConfigError(f"unknown device '{preference}': use auto, cpu, cuda or cuda:N") from None


def init_distributed(device_preference: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if ``WORLD_SIZE > 1`` (env:// rendezvous).

    Besides the main group (NCCL on GPU, gloo on CPU) a gloo group carries small control
    messages such as "a rank got SIGTERM", so checking them never synchronises the GPU.
    On CPU each rank gets ``cores / local ranks`` threads so ranks do not oversubscribe.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world == 1:
        return DistInfo(0, 1, 0, device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, available_cpus() // local_world))
    control = (
        # a group made without ``ranks`` holds every rank, so never NON_GROUP_MEMBER here
        cast(dist.ProcessGroup, dist.new_group(backend="gloo"))
        if device.type == "cuda"
        else dist.group.WORLD
    )
    return DistInfo(rank, world, local_rank, device, control)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier(group=info.control_group)


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def agree(info: DistInfo, error: JepactlError | None) -> None:
    """Raise the first rank's error on every rank, so no rank waits for one that gave up."""
    errors: list[JepactlError | None] = [error]
    if info.distributed:
        errors = [None] * info.world_size
        dist.all_gather_object(errors, error, group=info.control_group)
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first


def broadcast(info: DistInfo, obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0, group=info.control_group)
    return box[0]
