"""Attention backends and the dispatcher that picks one.

| name | what | used by ``"auto"`` when |
|---|---|---|
| ``xformers`` | ``memory_efficient_attention`` (+ ``BlockDiagonalMask`` packing) | installed and its kernels run on the device/dtype |
| ``sdpa`` | ``torch.nn.functional.scaled_dot_product_attention`` | otherwise (always on CPU) |
| ``eager`` | the plain reference math | only when asked for, or when both above refuse |

Asking for ``"xformers"`` when its kernels cannot run falls back to SDPA with one log line (a warning the
first time in a process, debug lines after that; logger ``"favor_qformer"``); asking for ``"eager"`` or ``"sdpa"`` on inputs they refuse raises a
``ValueError`` listing the reasons.
"""

from __future__ import annotations

import logging

import torch

from .base import AttentionBackend, AttentionInputs
from .eager import EagerBackend
from .sdpa import SdpaBackend
from .xformers import XformersBackend, reset_probe_cache, xformers_failure

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "AttentionBackend",
    "AttentionInputs",
    "attention",
    "refusal_reasons",
    "reset_probe_cache",
    "select_backend",
    "xformers_failure",
]

logger = logging.getLogger("favor_qformer")

BACKENDS: dict[str, AttentionBackend] = {
    "xformers": XformersBackend(),
    "sdpa": SdpaBackend(),
    "eager": EagerBackend(),
}
AUTO_ORDER = ("xformers", "sdpa", "eager")
_LOGGED: set[str] = set()


def _log_once(message: str) -> None:
    """The first fallback of the process is a warning; later ones (another device or dtype) only debug lines."""
    if message not in _LOGGED:
        logger.log(logging.DEBUG if _LOGGED else logging.WARNING, message)
        _LOGGED.add(message)


def refusal_reasons(inputs: AttentionInputs, names: tuple[str, ...] = AUTO_ORDER) -> dict[str, list[str]]:
    """Every backend's reasons to refuse ``inputs`` (empty list = it would run them)."""
    return {name: BACKENDS[name].supports(inputs) for name in names}


def select_backend(name: str, inputs: AttentionInputs) -> AttentionBackend:
    """The backend that runs ``inputs`` when ``name`` is asked for.

    Args:
        name: ``"auto"``, ``"eager"``, ``"sdpa"`` or ``"xformers"``.
        inputs: The attention call.

    Raises:
        ValueError: ``name`` is unknown, or no allowed backend accepts ``inputs`` (every reason is listed).
    """
    if name not in (*BACKENDS, "auto"):
        raise ValueError(f"attention backend: expected one of {('auto', *BACKENDS)}, got {name!r}")
    order = AUTO_ORDER if name == "auto" else ("xformers", "sdpa") if name == "xformers" else (name,)
    reasons: dict[str, list[str]] = {}
    for candidate in order:
        refused = BACKENDS[candidate].supports(inputs)
        if not refused:
            xformers_refusal = reasons.get("xformers")
            # One line when xformers is installed but cannot run here (absent xformers is not news under "auto").
            if xformers_refusal and (
                name == "xformers" or not xformers_refusal[-1].startswith("xformers is not importable")
            ):
                _log_once(
                    f"favor_qformer: xformers unavailable, using {candidate}: {'; '.join(xformers_refusal)}"
                )
            return BACKENDS[candidate]
        reasons[candidate] = refused
    listing = "; ".join(f"{key}: {', '.join(value)}" for key, value in reasons.items())
    raise ValueError(f"attention backend {name!r}: no backend accepts these inputs ({listing})")


def attention(inputs: AttentionInputs, backend: str = "auto") -> torch.Tensor:
    """Run ``inputs`` on the backend ``select_backend(backend, inputs)`` picks; returns (B, h, Lq, d).

    xformers' own dispatcher may still refuse a shape its kernels do not cover (``NotImplementedError``, e.g. a
    head width that is not a multiple of 8 in half precision on recent GPUs): that falls back like any refusal.
    """
    chosen = select_backend(backend, inputs)
    if chosen.name != "xformers":
        return chosen(inputs)
    try:
        return chosen(inputs)
    except NotImplementedError as error:
        text = str(error).strip().splitlines()
        for name in ("sdpa", "eager"):
            if not BACKENDS[name].supports(inputs):
                _log_once(
                    f"favor_qformer: xformers refused these inputs, using {name}: "
                    f"NotImplementedError: {text[0] if text else ''}"
                )
                return BACKENDS[name](inputs)
        raise
