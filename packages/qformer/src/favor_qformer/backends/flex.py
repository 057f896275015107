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
                _kernel()(probe, probe, probe, block_mask=_block_mask(pattern, device, 16, 1))
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
    _length_table.cache_clear()


def _mask_mod(tokens_per_frame: int, direction: str, real_tokens: torch.Tensor):
    """The rule of ``BlockCausalPattern.allowed`` as a FlexAttention ``mask_mod``; ``real_tokens``: (B,) long."""
    rule = BlockCausalPattern(1, tokens_per_frame, direction)  # only the frame size and direction are read

    def mask_mod(b, h, q_idx, kv_idx):
        return rule.allowed(b, q_idx, kv_idx, real_tokens)

    return mask_mod


@functools.lru_cache(maxsize=16)
def _length_table(num_frames: int, tokens_per_frame: int, direction: str, device: torch.device, block: int):
    """A ``BlockMask`` with one row per real length: row ``r - 1`` is a window with ``r`` real frames (row F - 1: a
    full window). Built once; a batch's mask is its rows picked by each window's length (no per-call building)."""
    ops = _flex_ops()
    assert not isinstance(ops, str)
    real = torch.arange(1, num_frames + 1, device=device) * tokens_per_frame  # (F,)
    length = num_frames * tokens_per_frame
    mask_mod = _mask_mod(tokens_per_frame, direction, real)
    return ops[1](mask_mod, num_frames, None, length, length, device=device, BLOCK_SIZE=block)


def _block_mask(pattern: BlockCausalPattern, device: torch.device, block: int, rows: int) -> object:
    """The ``BlockMask`` of ``pattern`` for ``rows`` windows.

    Full batches take the same path (every row picks the full-window row), so one compiled kernel serves all.
    """
    from torch.nn.attention.flex_attention import BlockMask

    frames, tokens = pattern.num_frames, pattern.tokens_per_frame
    table = _length_table(frames, tokens, pattern.direction, device, block)
    real_frames = pattern.real_frames if pattern.real_frames is not None else (frames,) * rows
    # A row with 0 real frames has only padding queries: its rule is the plain block pattern (the full row's).
    lengths = torch.tensor([r if 0 < r <= frames else frames for r in real_frames], device=device)
    picked = lengths - 1  # (B,) rows of the table
    return BlockMask.from_kv_blocks(
        table.kv_num_blocks[picked],
        table.kv_indices[picked],
        table.full_kv_num_blocks[picked],
        table.full_kv_indices[picked],
        BLOCK_SIZE=block,
        mask_mod=_mask_mod(tokens, pattern.direction, lengths * tokens),
        seq_lengths=(pattern.length, pattern.length),
    )


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
        # One kernel call for the whole batch: full and partial windows pick their rows of a cached table.
        return kernel(q, k, v, block_mask=_block_mask(pattern, device, block, q.shape[0]))
