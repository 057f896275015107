"""FlexAttention for the block-causal module: the blocks the frame-causal rule masks entirely are skipped.

FAVOR's causal module (arXiv 2310.05863, Sec. 3.2) admits only frame pairs on one side of the diagonal (55% of a
10-frame window); a dense boolean mask still computes every pair. ``torch.nn.attention.flex_attention`` with a
``BlockMask`` visits only the key blocks a query block may see, and treats blocks that are entirely allowed
without evaluating the mask. The blocks are aligned to frames (a multiple of ``tokens_per_frame`` tokens,
``block_tokens``), so every block is either entirely masked (skipped), entirely allowed, or, with padding, partial.

Only the compiled kernel is fast: uncompiled, flex_attention materialises the scores and was 6x slower than SDPA
on CPU (docs/performance.md). So the backend refuses when the compiled kernel cannot run here (probed once per
device and dtype: no compiler, an old torch, ...), on CPU when gradients are needed (torch has no FlexAttention
backward on CPU), with attention dropout (flex_attention has none), and on calls that carry no block-causal
pattern (the other attention calls are dense or key-padded: SDPA runs them as fast); the dispatcher then falls
back to SDPA with one log line.

Shape legend: B rows (windows), h heads, L tokens per window, d head width, F frames, N tokens per frame.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ..masks import BlockCausalPattern
from .base import AttentionInputs, common_refusals

# Target block edge in tokens per device type (rounded to whole frames). CPU: 32 measured fastest at the released
# shape (32 > 64 > 128 tokens, docs/performance.md). CUDA: the Triton kernel's default tile (128).
BLOCK_TOKENS = {"cpu": 32, "cuda": 128}
FLEX_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# (device type, device index, dtype) -> None when the compiled kernel ran, else why it did not.
_PROBES: dict[tuple[str, int | None, torch.dtype], str | None] = {}
# Whether to compile flex_attention (tests switch it off to check the mask logic cheaply).
_STATE = {"compile": True}


def block_tokens(tokens_per_frame: int, device_type: str) -> int:
    """The BlockMask block edge: whole frames, as close to the device's preferred size as frames allow."""
    target = BLOCK_TOKENS.get(device_type, 128)
    return tokens_per_frame * max(1, round(target / tokens_per_frame))


@functools.cache
def _flex_ops() -> tuple[Callable[..., torch.Tensor], Callable[..., object]] | str:
    """(flex_attention, create_block_mask), or why they cannot be imported."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except Exception as error:  # ImportError on a torch without FlexAttention
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention ({type(error).__name__})"
    return flex_attention, create_block_mask


@functools.cache
def _compiled_flex() -> Callable[..., torch.Tensor]:
    ops = _flex_ops()
    assert not isinstance(ops, str)  # guarded by flex_failure
    # dynamic=True: the number of windows changes from call to call; one compilation serves them all.
    return torch.compile(ops[0], dynamic=True)


def _kernel() -> Callable[..., torch.Tensor]:
    ops = _flex_ops()
    assert not isinstance(ops, str)
    return _compiled_flex() if _STATE["compile"] else ops[0]


def set_flex_compile(enabled: bool) -> None:
    """Compile flex_attention (default) or run it uncompiled (slow; tests of the mask logic use it)."""
    _STATE["compile"] = bool(enabled)


def flex_failure(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the (compiled) FlexAttention kernel cannot run on ``device``/``dtype``; ``None`` = it can.

    The first call per (device, dtype) compiles a tiny block-causal call (seconds); the answer is cached.
    """
    ops = _flex_ops()
    if isinstance(ops, str):
        return ops
    if dtype not in FLEX_DTYPES:
        return f"flex_attention runs {[str(t).removeprefix('torch.') for t in FLEX_DTYPES]}, got {dtype}"
    if not _STATE["compile"]:
        return None
    key = (device.type, device.index, dtype)
    if key not in _PROBES:
        try:
            probe = torch.zeros(1, 1, 32, 16, device=device, dtype=dtype)
            pattern = BlockCausalPattern(2, 16, "future")
            with torch.no_grad():
                _kernel()(probe, probe, probe, block_mask=_block_mask(pattern, device, 16))
            _PROBES[key] = None
        except Exception as error:  # no C++ compiler / Triton, unsupported device, ...
            text = str(error).strip().splitlines()
            _PROBES[key] = (
                f"compiled flex_attention does not run on {device.type}/{str(dtype).removeprefix('torch.')} "
                f"({type(error).__name__}: {text[0][:200] if text else ''})"
            )
    return _PROBES[key]


def reset_flex_probe_cache() -> None:
    """Forget the kernel probes and cached block masks."""
    _PROBES.clear()
    _shared_block_mask.cache_clear()


def _block_mask(pattern: BlockCausalPattern, device: torch.device, block: int) -> object:
    """A ``BlockMask`` of ``pattern`` broadcast over rows: ``pattern.real_frames`` is ``None`` or one length."""
    ops = _flex_ops()
    assert not isinstance(ops, str)
    real_tokens = pattern.real_tokens(device)  # (1,): every row of this call has that many real tokens
    if (
        real_tokens is None
    ):  # full rows: the same rule with L real tokens, so full and partial masks share one
        real_tokens = torch.tensor([pattern.length], device=device)  # compiled kernel (no recompilation)

    def mask_mod(b, h, q_idx, kv_idx):
        return pattern.allowed(torch.zeros_like(b), q_idx, kv_idx, real_tokens)

    length = pattern.length
    return ops[1](mask_mod, None, None, length, length, device=device, BLOCK_SIZE=block)


@functools.lru_cache(maxsize=64)
def _shared_block_mask(pattern: BlockCausalPattern, device: torch.device, block: int) -> object:
    """``_block_mask``, built once per (pattern, device, block): all rows with the same real length share it."""
    return _block_mask(pattern, device, block)


class FlexBackend:
    """``flex_attention`` (compiled) with a frame-aligned ``BlockMask`` of the block-causal pattern."""

    name = "flex"

    def supports(self, inputs: AttentionInputs) -> list[str]:
        reasons = common_refusals(inputs)
        pattern = inputs.pattern
        if pattern is None:
            reasons.append("no block-causal pattern (flex runs only the causal module; SDPA runs the rest)")
        elif inputs.query.shape[-2] != pattern.length or inputs.key.shape[-2] != pattern.length:
            reasons.append(
                f"pattern of {pattern.length} tokens, got {inputs.query.shape[-2]} queries and "
                f"{inputs.key.shape[-2]} keys"
            )
        elif pattern.real_frames is not None and len(pattern.real_frames) != inputs.query.shape[0]:
            reasons.append(f"pattern of {len(pattern.real_frames)} rows, got {inputs.query.shape[0]}")
        if inputs.dropout_p > 0:
            reasons.append("flex_attention has no attention dropout (training with dropout > 0)")
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (inputs.query, inputs.key, inputs.value)
        )
        if needs_grad and inputs.device.type == "cpu" and _STATE["compile"]:
            reasons.append(f"torch {torch.__version__} has no FlexAttention backward on CPU")
        if not reasons:
            failure = flex_failure(inputs.device, inputs.dtype)
            if failure is not None:
                reasons.append(failure)
        return reasons

    def __call__(self, inputs: AttentionInputs) -> torch.Tensor:
        pattern = inputs.pattern
        assert pattern is not None  # guarded by supports()
        q, k, v = inputs.query, inputs.key, inputs.value  # (B, h, L, d)
        device = q.device
        block = block_tokens(pattern.tokens_per_frame, device.type)
        kernel = _kernel()
        if pattern.real_frames is None:
            return kernel(q, k, v, block_mask=_shared_block_mask(pattern, device, block))
        # Rows are grouped by real length (in a batch of windows almost all are full; only a video's last window
        # is partial), and each group uses one cached mask: no per-call mask building, one kernel call per group.
        out = torch.empty_like(q)
        groups: dict[int, list[int]] = {}
        for row, real in enumerate(pattern.real_frames):
            groups.setdefault(min(real, pattern.num_frames), []).append(row)
        for real, members in groups.items():
            group = BlockCausalPattern(
                pattern.num_frames,
                pattern.tokens_per_frame,
                pattern.direction,
                None if real == pattern.num_frames else (real,),
            )
            block_mask = _shared_block_mask(group, device, block)
            if len(members) == len(pattern.real_frames):
                return kernel(q, k, v, block_mask=block_mask)
            rows = torch.tensor(members, device=device)
            out[rows] = kernel(q[rows], k[rows], v[rows], block_mask=block_mask)
        return out
