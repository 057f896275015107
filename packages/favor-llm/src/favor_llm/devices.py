"""The ``--device`` and ``--dtype`` flags of the ``favor`` commands, checked in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parsers read DTYPES without importing torch (`favor --help`)
    import torch

__all__ = ["DTYPES", "device_and_dtype"]

#: ``--dtype`` choices; ``auto`` is float32 on CPU, bfloat16 on GPUs that have it, else float16.
DTYPES = ("auto", "float32", "bfloat16", "float16")


def device_and_dtype(device: str, dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """``device`` (``auto``: cuda when available, else cpu; ``cpu``, ``cuda``, ``cuda:1``) and ``dtype`` (`DTYPES`)
    as torch objects.

    Raises:
        ValueError: a device torch does not know, CUDA asked for where there is none, or a dtype not in `DTYPES`.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {device} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):  # e.g. mps on Linux: torch raises only when a tensor first goes there
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as err:
            text = str(err).strip().splitlines()
            raise ValueError(f"--device: {device} is not usable here ({text[0] if text else err})") from None
    if dtype not in DTYPES:
        raise ValueError(f"--dtype: expected one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        if dev.type == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "float32"
    return dev, getattr(torch, dtype)
