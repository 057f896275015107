"""The frame sampler: a video stream sampled at ``fps`` by presentation time (the frame rule of media.py).

Frame ``t`` of the output is the source frame on screen at the centre of its interval, ``(t + 0.5) / fps``: the
last source frame whose presentation time is at or before it. Only the frames that are kept are converted to RGB
and held, never the source video at full frame rate. Shapes: ``T`` output frames, ``H x W`` the picture.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from favor_avsync._clock import frames_for_seconds
from favor_avsync._source import (
    MediaSource,
    declared_stream_end,
    decode,
    pick_streams,
    progress_bar,
    seconds,
    seek,
)
from favor_avsync.errors import MediaError
from favor_avsync.limits import MediaLimits

#: Float slack (seconds) when comparing a sampling instant with a source frame's timestamp.
TIME_SLACK = 1e-6


class FrameSampler:
    """Samples the first video stream of ``source`` at ``fps`` within a window of its timestamps.

    Args:
        av: The PyAV module.
        source: The file.
        fps: Output frames per second.
        limits: `MediaLimits` (``max_pixels``, ``max_duration``, ``max_frame_bytes`` apply here).
    """

    def __init__(self, av: Any, source: MediaSource, fps: Fraction, limits: MediaLimits) -> None:
        self.av = av
        self.source = source
        self.fps = fps
        self.limits = limits
        self.name = source.name

    def image(self) -> torch.Tensor:
        """``(1, 3, H, W)`` uint8 RGB of a still image."""
        with self.source.open(self.av) as container:
            video, _ = pick_streams(container)
            self._check_declared_size(video, image=True)
            frame = next(iter(decode(self.av, container, video, self.name)), None)
            if frame is None:
                raise MediaError(
                    f"{self.name}: the image could not be decoded (corrupt or truncated?); re-download or re-encode it"
                )
            self._check_size(frame.width, frame.height)
            rgb_frame = rgb(frame)  # (3, H, W)
        return torch.from_numpy(rgb_frame)[None]

    def sample(
        self, w0: float, w1: float, show: bool, total: float | None
    ) -> tuple[torch.Tensor, np.ndarray, float, bool]:
        """Frames of the window ``[w0, w1)`` (file timestamps, seconds) at ``fps`` by the centre rule.

        Args:
            w0: Start of the window; output frame 0 starts here.
            w1: End of the window (``inf``: to the end of the stream).
            show: Show a progress bar.
            total: Seconds expected, for the bar.

        Returns:
            ``(T, 3, H, W)`` uint8 frames; ``(T,)`` float64 source times (file clock, NaN for black frames before
            the stream starts); the video's end (file clock, at most ``w1``); whether content lay beyond ``w1``.
        """
        step = self.fps.denominator / self.fps.numerator  # seconds per output frame
        bar = progress_bar(show, total, f"video {Path(self.name).name}")
        kept: list[np.ndarray] = []
        kept_times: list[float] = []
        prev = None  # (frame, time)
        prev_rgb: np.ndarray | None = None
        t_out = 0
        last_gap: float | None = None
        beyond = False
        next_time: float | None = None  # the first frame at or past w1, when decoding stopped there
        black: np.ndarray | None = None
        try:
            with self.source.open(self.av) as container:
                stream, _ = pick_streams(container)
                stream.thread_type = "AUTO"
                width, height = self._check_declared_size(stream, image=False)
                if width and height:
                    self._check_frame_bytes(w0, w1, stream, width * height)
                if w0 > 1.0:
                    seek(container, stream, w0)
                for frame in decode(self.av, container, stream, self.name):
                    p = seconds(frame)
                    if p is None:  # no timestamp: assume the nominal rate
                        rate = stream.guessed_rate or stream.average_rate or 25
                        p = (prev[1] + 1 / float(rate)) if prev is not None else w0
                    if prev is not None and p <= prev[1]:
                        continue  # a duplicate or out-of-order timestamp never goes back in time
                    if p >= w1:
                        beyond = True
                        next_time = p
                        break
                    self.limits.check_timestamp(self.name, "video", p - w0)
                    # Emit every output frame whose centre lies before this frame: the previous frame shows there.
                    # (1 us of slack: a source frame exactly at a centre is "at or before" it even when the float
                    # sum start + (t + 0.5) / fps rounds just below its timestamp, as 0.09 + 0.25 does below 0.34.)
                    while w0 + (t_out + 0.5) * step < p - TIME_SLACK and t_out * step < w1 - w0:
                        if prev is None:
                            if black is None:
                                self._check_size(frame.width, frame.height)
                                black = np.zeros(
                                    (3, height or frame.height, width or frame.width), dtype=np.uint8
                                )
                            kept.append(black)
                            kept_times.append(math.nan)
                        else:
                            if prev_rgb is None:
                                prev_rgb = rgb(prev[0])
                            kept.append(prev_rgb)
                            kept_times.append(prev[1])
                        t_out += 1
                    self._check_frames(t_out, (3, frame.height, frame.width))  # undeclared lengths too
                    if prev is not None:
                        last_gap = p - prev[1]
                    self._check_size(frame.width, frame.height)
                    prev, prev_rgb = (frame, p), None
                    if bar is not None:
                        bar.update(max(0.0, p - w0 - bar.n))
                if prev is None and next_time is None:
                    raise MediaError(
                        f"{self.name}: no video frame could be decoded in [{w0:.2f}, {w1:.2f}) s "
                        "(corrupt or truncated?); re-download or re-encode the file"
                    )
                if prev is None:
                    # The video starts at or after w1: black over the whole window, as before any late start.
                    video_end = w1
                    n_total = frames_for_seconds(video_end - w0, self.fps)
                    black = np.zeros((3, height or frame.height, width or frame.width), dtype=np.uint8)
                    kept += [black] * (n_total - t_out)
                    kept_times += [math.nan] * (n_total - t_out)
                    t_out = n_total
                else:
                    frame, p = prev
                    # The last kept frame is on screen until the next one; only at the real end of the stream does
                    # its duration have to be guessed (its own, else the last gap, else the nominal rate).
                    duration = (
                        next_time - p if next_time is not None else frame_duration(frame, stream, last_gap)
                    )
                    beyond |= p + duration > w1 + 1e-3  # the last frame is still on screen past the end
                    video_end = min(p + duration, w1)
                    n_total = frames_for_seconds(video_end - w0, self.fps)
                    while t_out < n_total:
                        if prev_rgb is None:
                            prev_rgb = rgb(frame)
                        kept.append(prev_rgb)
                        kept_times.append(p)
                        t_out += 1
        finally:
            if bar is not None:
                bar.close()
        self._check_frames(len(kept), kept[0].shape if kept else None)
        frames = (
            torch.from_numpy(np.stack(kept)) if kept else torch.zeros(0, 3, height, width, dtype=torch.uint8)
        )
        return frames, np.asarray(kept_times, dtype=np.float64), video_end, beyond

    # --------------------------------------------------------------------------------- limits

    def _check_declared_size(self, stream: Any, image: bool) -> tuple[int, int]:
        """The stream's declared ``(width, height)``, refused past ``max_pixels`` before anything is decoded."""
        ctx = stream.codec_context
        width, height = (ctx.width, ctx.height) if ctx is not None else (0, 0)
        if width and height:
            self._check_size(width, height)
        elif image:
            # Probing decodes the picture to learn its size; past max_pixels the decoder refuses, leaving 0 x 0.
            raise MediaError(
                f"{self.name}: the picture's size could not be read within limits.max_pixels="
                f"{self.limits.max_pixels:,} (a larger picture, or a damaged file); pass "
                "limits=favor_avsync.MediaLimits(max_pixels=...) to allow larger pictures"
            )
        return width, height

    def _check_size(self, width: int, height: int) -> None:
        if width * height > self.limits.max_pixels:
            raise MediaError(
                f"{self.name}: its pictures are {width} x {height} = {width * height:,} pixels, over limits.max_pixels="
                f"{self.limits.max_pixels:,}; downscale the file, or pass limits=favor_avsync.MediaLimits("
                "max_pixels=...) to allow it"
            )

    def _check_frame_bytes(self, w0: float, w1: float, stream: Any, pixels: int) -> None:
        """Refuse before decoding when the declared length at ``fps`` makes more than ``max_frame_bytes``."""
        declared = declared_stream_end(stream)
        end = min(w1, declared) if declared is not None else w1
        if math.isfinite(end):
            self._check_frames(frames_for_seconds(max(0.0, end - w0), self.fps), (3, 1, pixels))

    def _check_frames(self, count: int, shape: tuple[int, ...] | None) -> None:
        size = count * math.prod(shape) if shape is not None else 0
        if size > self.limits.max_frame_bytes:
            raise MediaError(
                f"{self.name}: {count} frames at fps={float(self.fps):g} of this video would take {_size(size)}, over "
                f"limits.max_frame_bytes={self.limits.max_frame_bytes} ({_size(self.limits.max_frame_bytes)}); pass "
                "max_seconds= or "
                "start=/end= for a part, a lower fps, or limits=favor_avsync.MediaLimits(max_frame_bytes=...)"
            )


def _size(nbytes: int) -> str:
    if nbytes < 2**20:  # small limits (tests, tiny budgets): "0.0 MiB over 0.0 MiB" said nothing
        return f"{nbytes:,} bytes"
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def rgb(frame: Any) -> np.ndarray:
    """``(3, H, W)`` uint8 RGB of a video frame."""
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24").transpose(2, 0, 1))


def frame_duration(frame: Any, stream: Any, last_gap: float | None) -> float:
    """How long the last frame stays on screen: its own duration, else the last gap, else the nominal rate."""
    dur = getattr(frame, "duration", None)
    if dur and frame.time_base is not None and dur > 0:
        return float(dur * frame.time_base)
    if last_gap is not None and last_gap > 0:
        return last_gap
    rate = stream.guessed_rate or stream.average_rate
    return 1 / float(rate) if rate else 0.04


__all__ = ["TIME_SLACK", "FrameSampler", "frame_duration", "rgb"]
