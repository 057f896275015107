"""Window tokens stored once per frame, so overlapping windows (stride < size) share their projections.

FAVOR's windows (arXiv 2310.05863, Sec. 3.2) may overlap: with stride 5 of 10, every frame sits in two windows.
A window's token is ``x = LN(frame token) + pos[position in window]`` (the input LayerNorm, then the window-local
position embedding, as released), and every linear map of it splits by linearity::

    W x + b = W LN(frame token) + (W pos[p] + b)

The first term does not depend on the window: it is computed once per real frame and gathered into every window
that holds the frame; the second is one (L, out) table per linear map. This holds for the causal module's
query/key/value projections (it reads the input-stage tokens, unless ``stack_causal`` above layer 0) and for the
cross-attention's key/value projections where no causal module runs. The naive path projects each window's copy.

Shape legend: M real frames in the batch, N tokens per frame, D width, Nw windows, F frames per window,
L = F * N tokens per window.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn


@dataclass
class SharedFrameTokens:
    """Window tokens ``x[w, f * N + n] = frames[index[w, f], n] + position[f * N + n]``.

    Attributes:
        frames: (M, N, D) the batch's real frames after the input LayerNorm, plus, when some window is partial, one
            padding frame as the last row (zeros through the LayerNorm, as padding frames enter the naive path).
        index: (Nw, F) long, the row of ``frames`` at each frame of each window (the padding row on padding frames).
        position: (L, D) window-local position embedding, or ``None``.
        tokens: (Nw, L, D) the materialised window tokens when built ahead (``with_tokens``), else ``None``.
    """

    frames: torch.Tensor
    index: torch.Tensor
    position: torch.Tensor | None
    tokens: torch.Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        """(Nw, L, D), the shape of ``materialise()``."""
        windows, frames = self.index.shape
        return torch.Size((windows, frames * self.frames.shape[1], self.frames.shape[2]))

    def dim(self) -> int:
        """3, like the (Nw, L, D) tensor it stands for."""
        return 3

    def _gather(self, per_frame: torch.Tensor) -> torch.Tensor:
        """(M + 1, N, C) per-frame values -> (Nw, L, C) per window."""
        return rearrange(per_frame[self.index], "w f n c -> w (f n) c")

    def materialise(self) -> torch.Tensor:
        """The window tokens as one tensor, (Nw, L, D) (for residuals and outputs)."""
        if self.tokens is not None:
            return self.tokens
        x = self._gather(self.frames)  # a fresh tensor (advanced indexing copies), so adding in place is safe
        return x if self.position is None else x.add_(self.position)

    def with_tokens(self) -> SharedFrameTokens:
        """A copy that carries ``materialise()``'s tensor, built once here for every layer that needs it (the
        causal module's residual). Built ahead rather than cached lazily, so gradient checkpointing's recomputation
        of a layer sees the same tensors as its first run."""
        return dataclasses.replace(self, tokens=self.materialise())

    def project(self, linear: nn.Linear) -> torch.Tensor:
        """``linear`` applied to every window token, (Nw, L, out), with each frame projected once."""
        per_frame = nn.functional.linear(self.frames, linear.weight)  # (M (+ 1), N, out)
        table = (
            linear.bias
            if self.position is None
            else nn.functional.linear(self.position, linear.weight, linear.bias)
        )
        out = self._gather(per_frame)  # a fresh tensor (advanced indexing copies), so adding in place is safe
        return out if table is None else out.add_(table)  # table: (L, out) or (out,)


def project(linear: nn.Linear, x: torch.Tensor | SharedFrameTokens) -> torch.Tensor:
    """``linear(x)`` for a tensor, or the frame-shared projection of ``SharedFrameTokens``."""
    return x.project(linear) if isinstance(x, SharedFrameTokens) else linear(x)


def materialise(x: torch.Tensor | SharedFrameTokens) -> torch.Tensor:
    """The (Nw, L, D) tensor of ``x``."""
    return x.materialise() if isinstance(x, SharedFrameTokens) else x


def share_frames(
    features: torch.Tensor,
    lengths: list[int],
    window_start: torch.Tensor,
    window_video: torch.Tensor,
    frame_valid: torch.Tensor,
    layernorm: nn.Module | None,
    position: torch.Tensor | None,
) -> SharedFrameTokens:
    """Build the frame-shared tokens of a batch.

    Args:
        features: (B, T, N, D) frames (padding frames past ``lengths`` are never read).
        lengths: Real frames per video (host ints).
        window_start: (Nw,) long, each window's first frame.
        window_video: (Nw,) long, each window's video.
        frame_valid: (Nw, F) bool, True on a window's real frames.
        layernorm: The input LayerNorm, or ``None``.
        position: (L, D) window-local position embedding, or ``None``.
    """
    batch, length = features.shape[:2]
    if all(n == length for n in lengths):  # no padded videos: the frames as they are (a view, no copy)
        real = features.reshape(batch * length, *features.shape[2:])  # (M, N, D)
        first = [b * length for b in range(batch)]
    else:
        real = torch.cat([features[b, :n] for b, n in enumerate(lengths)])  # (M, N, D)
        first = [sum(lengths[:b]) for b in range(batch)]
    partial = not bool(frame_valid.all())
    if partial:  # one padding frame as the last row, for the padding frames of partial windows
        real = torch.cat([real, real.new_zeros(1, *real.shape[1:])])  # (M + 1, N, D)
    frames = real if layernorm is None else layernorm(real)
    offsets = torch.arange(frame_valid.shape[1], device=features.device)
    first_row = torch.tensor(first, device=features.device)  # (B,) row of each video's frame 0
    rows = first_row[window_video][:, None] + window_start[:, None] + offsets[None, :]  # (Nw, F)
    if partial:
        rows = torch.where(frame_valid, rows, torch.full_like(rows, real.shape[0] - 1))
    return SharedFrameTokens(frames, rows, position)
