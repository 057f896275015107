"""Attention backends and the dispatcher that picks one.

| name | what | used by ``"auto"`` when |
|---|---|---|
| ``flex`` | compiled ``flex_attention`` + frame-aligned ``BlockMask`` (skips masked blocks) | the block-causal module, at least ``AUTO_FLEX_MIN_FLOPS`` of dense work, compiled kernel runs, no grad on CPU, no dropout |
| ``xformers`` | ``memory_efficient_attention`` (+ ``BlockDiagonalMask`` packing) | installed and its kernels run on the device/dtype |
| ``sdpa`` | ``torch.nn.functional.scaled_dot_product_attention`` | otherwise (always on CPU, except ``flex`` above) |
| ``eager`` | the plain reference math | only when asked for, or when all above refuse |

The order is measured, not guessed (docs/performance.md, ``nox -s bench``): on the block-causal module compiled
flex took 0.5-0.6x the time of unmasked SDPA on CPU at the released shape (SDPA with the dense mask: about 1x),
and on an H100 flex beat SDPA with the dense mask; on small calls the flex kernel's fixed cost loses to SDPA.

Asking for ``"xformers"`` or ``"flex"`` when they cannot run falls back to SDPA with one log line (a warning the
first time in a process, debug lines after that; logger ``"favor_qformer"``); asking for ``"eager"`` or ``"sdpa"`` on inputs they refuse raises a
``ValueError`` listing the reasons.
"""

from __future__ import annotations

import logging

import torch

from .base import AttentionBackend, AttentionInputs
from .eager import EagerBackend
from .flex import FlexBackend, flex_failure, reset_flex_probe_cache, set_flex_compile
from .sdpa import SdpaBackend
from .xformers import XformersBackend, reset_probe_cache, xformers_failure

__all__ = [
    "AUTO_FLEX_MIN_FLOPS",
    "AUTO_ORDER",
    "BACKENDS",
    "AttentionBackend",
    "AttentionInputs",
    "attention",
    "auto_order",
    "flex_failure",
    "refusal_reasons",
    "reset_flex_probe_cache",
    "reset_probe_cache",
    "select_backend",
    "set_flex_compile",
    "xformers_failure",
]

logger = logging.getLogger("favor_qformer")

BACKENDS: dict[str, AttentionBackend] = {
    "xformers": XformersBackend(),
    "sdpa": SdpaBackend(),
    "eager": EagerBackend(),
    "flex": FlexBackend(),
}
AUTO_ORDER = ("xformers", "sdpa", "eager")
# Dense work (4 B h L^2 d) from which "auto" runs the block-causal module on flex. Below it SDPA won on CPU
# (the compiled kernel's fixed cost; docs/performance.md), and a small model is not worth a compilation.
AUTO_FLEX_MIN_FLOPS = 2e8
_LOGGED: set[str] = set()


def _log_once(message: str) -> None:
    """The first fallback of the process is a warning; later ones (another device or dtype) only debug lines."""
    if message not in _LOGGED:
        logger.log(logging.DEBUG if _LOGGED else logging.WARNING, message)
        _LOGGED.add(message)


def refusal_reasons(inputs: AttentionInputs, names: tuple[str, ...] = AUTO_ORDER) -> dict[str, list[str]]:
    """Every backend's reasons to refuse ``inputs`` (empty list = it would run them)."""
    return {name: BACKENDS[name].supports(inputs) for name in names}


def auto_order(inputs: AttentionInputs) -> tuple[str, ...]:
    """The backends ``"auto"`` tries, fastest first by measurement: flex first on a large block-causal call."""
    if inputs.pattern is not None and inputs.flops >= AUTO_FLEX_MIN_FLOPS:
        return ("flex", *AUTO_ORDER)
    return AUTO_ORDER


def _order(name: str, inputs: AttentionInputs) -> tuple[str, ...]:
    if name == "auto":
        return auto_order(inputs)
    if name in ("xformers", "flex"):  # the fast paths fall back instead of failing
        return (name, "sdpa", "eager")
    return (name,)


def _news(name: str, candidate: str, refused: list[str], inputs: AttentionInputs) -> bool:
    """Whether a refusal deserves the one log line: asked-for backends that cannot run, or a broken install.

    Absent xformers under "auto", or flex skipping a call that has no block-causal pattern, is not news.
    """
    if candidate == "flex":
        return inputs.pattern is not None and (
            name == "flex" or refused[-1].startswith("compiled flex_attention does not run")
        )
    return name == "xformers" or not refused[-1].startswith("xformers is not importable")


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
    reasons: dict[str, list[str]] = {}
    for candidate in _order(name, inputs):
        refused = BACKENDS[candidate].supports(inputs)
        if not refused:
            for fast in ("flex", "xformers"):
                if reasons.get(fast) and _news(name, fast, reasons[fast], inputs):
                    _log_once(
                        f"favor_qformer: {fast} unavailable, using {candidate}: {'; '.join(reasons[fast])}"
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
    if chosen.name not in ("xformers", "flex"):
        return chosen(inputs)
    # flex: a shape the compiler fails on must not fail the forward pass either (any error of the compile stack).
    caught = NotImplementedError if chosen.name == "xformers" else Exception
    try:
        return chosen(inputs)
    except caught as error:
        text = str(error).strip().splitlines()
        for name in ("sdpa", "eager"):
            if not BACKENDS[name].supports(inputs):
                _log_once(
                    f"favor_qformer: {chosen.name} refused these inputs, using {name}: "
                    f"{type(error).__name__}: {text[0][:200] if text else ''}"
                )
                return BACKENDS[name](inputs)
        raise
