"""Which accelerator to run on: ``auto`` takes CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import re

from core.errors import EmbtuneError

VALID_DEVICES = ("auto", "cpu", "cuda", "mps")


def device_name(requested: str | None) -> str:
    """The device as written, normalised; a name no machine has (a typo) is refused before any work."""
    name = (requested or "auto").strip().lower()
    if not re.fullmatch(rf"{'|'.join(VALID_DEVICES)}|cuda:\d+", name):
        raise EmbtuneError(f"device {requested!r} is unknown: use auto, cpu, cuda, cuda:N or mps")
    return name


def resolve_device(requested: str = "auto") -> str:
    """Turn ``auto`` into a concrete device; refuse an accelerator that is not there."""
    import torch

    requested = device_name(requested)
    base = requested.split(":", 1)[0]
    if base == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if base == "cuda" and not torch.cuda.is_available():
        raise EmbtuneError(f"device {requested!r} was asked for but CUDA is not available here: use cpu or auto")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EmbtuneError(f"device {requested!r} was asked for but Apple MPS is not available here: use cpu or auto")
    return requested


def gpu_memory() -> list[dict[str, float | int | str]]:
    """Per-CUDA-device memory (GiB): what a user needs to see before a 4-bit vs bf16 choice. Empty on CPU."""
    import torch

    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        devices.append({"device": index, "name": torch.cuda.get_device_name(index),
                        "allocated_gib": round(torch.cuda.memory_allocated(index) / 2**30, 2),
                        "reserved_gib": round(torch.cuda.memory_reserved(index) / 2**30, 2),
                        "free_gib": round(free / 2**30, 2), "total_gib": round(total / 2**30, 2)})
    return devices


def gpu_memory_line(device: dict[str, float | int | str]) -> str:
    return (f"cuda:{device['device']} {device['name']}: {device['allocated_gib']} GiB allocated, "
            f"{device['reserved_gib']} reserved, {device['free_gib']}/{device['total_gib']} GiB free")
