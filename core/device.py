"""Which accelerator to run on: ``auto`` takes CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

from core.errors import EmbtuneError

VALID_DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(requested: str = "auto") -> str:
    """Turn ``auto`` into a concrete device; refuse an accelerator that is not there."""
    import torch

    requested = (requested or "auto").lower()
    base = requested.split(":", 1)[0]
    if base not in VALID_DEVICES:
        raise EmbtuneError(f"device {requested!r} is unknown: use one of {', '.join(VALID_DEVICES)} (or cuda:N)")
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
