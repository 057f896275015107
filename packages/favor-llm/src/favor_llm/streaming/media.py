"""Media for a stream, piece by piece: a file (decoded by `favor_avsync.load_media`, then played in pieces) or a
pipe (e.g. ``ffmpeg ... -f matroska - | favor stream --media -``) decoded incrementally with PyAV.

Pipe sampling follows `favor_avsync.load_media`'s rules on one clock: frame ``k`` is the source frame showing at
the centre of its interval, ``(k + 1/2) / fps`` (the latest frame whose time is at or before it, 1 us slack; black
before the first frame), audio is resampled to mono at the
model's rate and laid end to end from the first decoded time. A pipe needs a streamable container (Matroska /
WebM, MPEG-TS; not MP4, whose index is at its end).

Each piece is ``(frames (F, H, W, 3) uint8 or None, audio (S,) float32 or None)``, in order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["file_pieces", "pipe_pieces"]

Piece = tuple[np.ndarray | None, np.ndarray | None]


def file_pieces(
    path: str | Path, fps: float, sample_rate: int, piece_seconds: float = 0.5
) -> Iterator[Piece]:
    """Decode ``path`` with `favor_avsync.load_media` and yield it in pieces of ``piece_seconds``."""
    from favor_avsync import load_media

    clip = load_media(path, fps=fps, sample_rate=sample_rate)
    frames = None if clip.frames is None else np.asarray(clip.frames).transpose(0, 2, 3, 1)  # (T, H, W, 3)
    audio = None if clip.audio is None else np.asarray(clip.audio, dtype=np.float32)
    per_frames = max(1, round(piece_seconds * fps))
    per_samples = round(per_frames / fps * sample_rate)
    count = max(
        0 if frames is None else -(-frames.shape[0] // per_frames),
        0 if audio is None else -(-audio.shape[0] // per_samples),
    )
    for i in range(count):
        f = None if frames is None else frames[i * per_frames : (i + 1) * per_frames]
        a = None if audio is None else audio[i * per_samples : (i + 1) * per_samples]
        yield (f if f is not None and len(f) else None, a if a is not None and len(a) else None)


def pipe_pieces(
    stream: BinaryIO, fps: float, sample_rate: int, piece_seconds: float = 0.5, name: str = "stdin"
) -> Iterator[Piece]:
    """Decode a byte stream incrementally (packets as they arrive) and yield pieces of about ``piece_seconds``."""
    import av

    try:
        container = av.open(stream, mode="r")
    except av.FFmpegError as err:
        raise ValueError(f"media: {name} is not a media stream PyAV can read ({err})") from err
    with container:
        video = next(iter(container.streams.video), None)
        audio = next(iter(container.streams.audio), None)
        if video is None and audio is None:
            raise ValueError(f"media: {name} holds no video or audio stream")
        sampler = _FrameSampler(fps)
        resampler = (
            av.AudioResampler(format="flt", layout="mono", rate=sample_rate) if audio is not None else None
        )
        frames: list[np.ndarray] = []
        samples: list[np.ndarray] = []
        origin: float | None = None
        emitted = 0  # audio samples yielded or pending, silence included
        per_frames = max(1, round(piece_seconds * fps))
        per_samples = round(piece_seconds * sample_rate)
        try:
            for packet in container.demux(*(s for s in (video, audio) if s is not None)):
                for frame in packet.decode():
                    time = float(frame.time) if frame.time is not None else 0.0
                    origin = time if origin is None else origin
                    if packet.stream.type == "video":
                        frames += sampler.push(time - origin, frame.to_ndarray(format="rgb24"))
                    elif resampler is not None:
                        # silence before audio that starts late or after a gap, as favor_avsync.load_media
                        # places samples by their time (20 ms slack for the resampler's delay)
                        gap = round((time - origin) * sample_rate) - emitted
                        if gap > 0.02 * sample_rate:
                            samples.append(np.zeros(gap, dtype=np.float32))
                            emitted += gap
                        for r in resampler.resample(frame):
                            samples.append(r.to_ndarray().reshape(-1))
                            emitted += samples[-1].shape[0]
                if len(frames) >= per_frames or sum(len(s) for s in samples) >= per_samples:
                    yield _piece(frames, samples)
                    frames, samples = [], []
        except av.FFmpegError as err:
            raise ValueError(f"media: decoding {name} failed ({err})") from err
        if resampler is not None:
            samples += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
        frames += sampler.finish()
        if frames or samples:
            yield _piece(frames, samples)


def _piece(frames: list[np.ndarray], samples: list[np.ndarray]) -> Piece:
    return (
        np.stack(frames) if frames else None,
        np.concatenate(samples).astype(np.float32, copy=False) if samples else None,
    )


class _FrameSampler:
    """Frames at ``fps`` from a source of any rate: frame ``k`` is the source frame showing at ``(k + 1/2) / fps``."""

    def __init__(self, fps: float) -> None:
        self.fps = float(fps)
        self.next = 0  # the next output frame index
        self.last: tuple[float, np.ndarray] | None = None
        self.gap = 0.0  # the last source frame-to-frame gap (the last frame's duration at the end)
        self.newest = -math.inf  # the latest source time so far

    def push(self, time: float, image: np.ndarray) -> list[np.ndarray]:
        if time < self.newest - 0.5 / self.fps:
            # frames would be dropped until the clock caught up, while the audio ran on
            raise ValueError(
                f"media: the video's time went back from {self.newest:.1f} s to {time:.1f} s; a stream needs "
                "increasing time stamps (re-time a joined or restarted source, e.g. ffmpeg -fflags +genpts)"
            )
        out = []
        # Output instants before this source frame show the previous one (1 us slack, as favor_avsync).
        while (self.next + 0.5) / self.fps < time - 1e-6:
            out.append(self.last[1] if self.last is not None else np.zeros_like(image))
            self.next += 1
        if self.last is not None:
            self.gap = time - self.last[0]
        self.last = (time, image)
        self.newest = max(self.newest, time)
        return out

    def finish(self) -> list[np.ndarray]:
        if self.last is None:
            return []
        out = []
        end = self.last[0] + (self.gap or 1.0 / self.fps)
        while (self.next + 0.5) / self.fps < end - 1e-6:
            out.append(self.last[1])
            self.next += 1
        return out
