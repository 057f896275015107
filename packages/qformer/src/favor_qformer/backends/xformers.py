"""xformers ``memory_efficient_attention``: the fast path on GPUs, never a hard failure.

xformers may import and still be unable to run: it has no CPU kernels, and its compiled extension only loads
with the torch it was built for. So the first use on a (device, dtype) runs one tiny call and caches whether the
kernels really work; when they do not, ``supports`` says why and the dispatcher falls back to SDPA.

Key-padded rows (the cross-attention of partial windows) are packed into one sequence with a
``BlockDiagonalMask``, so no work is spent on padding keys; any other mask becomes a dense additive bias.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from .base import AttentionInputs, common_refusals

# (device type, device index, dtype) -> None when the kernels ran, else why they did not.
_PROBES: dict[tuple[str, int | None, torch.dtype], str | None] = {}


@functools.cache
def _load_xformers() -> tuple[Callable[..., torch.Tensor], Any] | str:
    """(memory_efficient_attention, BlockDiagonalMask), or the reason xformers cannot be imported."""
    try:
        from xformers.ops import memory_efficient_attention
        from xformers.ops.fmha.attn_bias import BlockDiagonalMask
    except Exception as error:  # ImportError, or a broken install raising anything at import
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return memory_efficient_attention, BlockDiagonalMask


def xformers_failure(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why xformers cannot run attention on ``device``/``dtype`` (``None`` = it can). Probed once, then cached."""
    ops = _load_xformers()
    if isinstance(ops, str):
        return f"xformers is not importable ({ops})"
    key = (device.type, device.index, dtype)
    if key not in _PROBES:
        memory_efficient_attention = ops[0]
        try:
            probe = torch.zeros(1, 8, 1, 8, device=device, dtype=dtype)  # (B, L, heads, d)
            memory_efficient_attention(probe, probe, probe)
            _PROBES[key] = None
        except (
            Exception
        ) as error:  # NotImplementedError (no kernel), RuntimeError (extension not loaded), ...
            text = str(error).strip().splitlines()
            cause = f"{type(error).__name__}: {text[0] if text else ''}"
            mismatch = _extension_mismatch()
            cause = f"{cause}; {mismatch}" if mismatch else cause
            _PROBES[key] = (
                f"xformers kernels do not run on {device.type}/{str(dtype).removeprefix('torch.')} ({cause})"
            )
    return _PROBES[key]


def _extension_mismatch() -> str | None:
    """Why xformers' compiled extension did not load, when it says so (built for another torch or Python).

    xformers records the failed load in a private attribute; reading it is best-effort, and ``None`` means we
    could not tell (the probe's own error is reported instead).
    """
    try:
        from xformers import _cpp_lib

        error = getattr(_cpp_lib, "_cpp_library_load_exception", None)
        version = error.args[0].metadata["version"]  # type: ignore[union-attr]
    except Exception:
        return None
    return (
        f"its C++/CUDA extension did not load: built for torch {version.get('torch')} and Python "
        f"{version.get('python')}, running torch {torch.__version__} and Python {_python_version()}"
    )


def _python_version() -> str:
    import platform

    return platform.python_version()


def reset_probe_cache() -> None:
    """Forget the import and kernel probes (tests; after installing xformers in a running process)."""
    _PROBES.clear()
    _load_xformers.cache_clear()


class XformersBackend:
    """``xformers.ops.memory_efficient_attention``, with ``BlockDiagonalMask`` packing of key-padded rows."""

    name = "xformers"

    def supports(self, inputs: AttentionInputs) -> list[str]:
        reasons = common_refusals(inputs)
        failure = xformers_failure(inputs.device, inputs.dtype)
        if failure is not None:
            reasons.append(failure)
        if inputs.key_lengths is not None and min(inputs.key_lengths, default=1) < 1:
            reasons.append("a row has no real keys (BlockDiagonalMask needs at least one key per row)")
        return reasons

    def __call__(self, inputs: AttentionInputs) -> torch.Tensor:
        ops = _load_xformers()
        if isinstance(ops, str):
            raise RuntimeError(f"xformers backend called although it is unavailable: {ops}")
        memory_efficient_attention, block_diagonal_mask = ops
        q = inputs.query.transpose(1, 2)  # (B, Lq, h, d): xformers' layout
        k = inputs.key.transpose(1, 2)  # (B, Lk, h, d)
        v = inputs.value.transpose(1, 2)
        batch, q_len, heads, head_dim = q.shape
        k_len = k.shape[1]
        lengths = inputs.key_lengths
        if lengths is not None and any(length < k_len for length in lengths):
            # Pack all rows into one sequence; each row's queries see only its own real keys.
            real = (
                torch.arange(k_len, device=k.device)[None, :]
                < torch.tensor(lengths, device=k.device)[:, None]
            )
            k_packed = k[real][None]  # (1, sum(lengths), h, d)
            v_packed = v[real][None]
            bias = block_diagonal_mask.from_seqlens(q_seqlen=[q_len] * batch, kv_seqlen=list(lengths))
            out = memory_efficient_attention(
                q.reshape(1, batch * q_len, heads, head_dim),
                k_packed,
                v_packed,
                attn_bias=bias,
                p=inputs.dropout_p,
            )
            return out.reshape(batch, q_len, heads, head_dim).transpose(1, 2)
        if inputs.mask is None or lengths is not None:
            out = memory_efficient_attention(q, k, v, p=inputs.dropout_p)
            return out.transpose(1, 2)
        out = memory_efficient_attention(
            q, k, v, attn_bias=_dense_bias(inputs, batch, heads, q_len, k_len), p=inputs.dropout_p
        )
        return out.transpose(1, 2)  # (B, h, Lq, d)


def _dense_bias(inputs: AttentionInputs, batch: int, heads: int, q_len: int, k_len: int) -> torch.Tensor:
    """Boolean mask -> additive (B, h, Lq, Lk) bias whose rows are stored 8-aligned (xformers' rule)."""
    mask = inputs.mask
    assert mask is not None  # guarded by the caller
    while mask.dim() < 4:
        mask = mask[None]
    mask = mask.expand(mask.shape[0], mask.shape[1], q_len, k_len)
    aligned = (k_len + 7) // 8 * 8
    storage = torch.zeros(*mask.shape[:-1], aligned, dtype=inputs.dtype, device=inputs.device)
    bias = storage[..., :k_len]
    bias.masked_fill_(~mask, float("-inf"))
    return bias.expand(batch, heads, q_len, k_len)
