"""Device and mixed-precision choices, made in one place (notebooks never call ``.cuda()``)."""
from __future__ import annotations

import contextlib

import torch

from fsslib.errors import FsslibError, unknown


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; explicit names are checked."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FsslibError(f"Device {device!r} was requested but CUDA is not available here.",
                          "use --device auto or --device cpu (from Python: device='auto' or device='cpu').")
    if not (device == "cpu" or device.startswith("cuda")):
        raise unknown("device", device, ["auto", "cpu", "cuda", "cuda:N"])
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the block at ``count`` torch threads, then restore the caller's count (a sum split over another number of
    threads adds in another order, so a result that must repeat bit for bit fixes its count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op on the CPU (AMP is off there)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
