"""Decoding media files into time-stamped frames and mono audio on one clock (PyAV, imported lazily).

FAVOR (Sun et al., 2023, arXiv 2310.05863, Section 3.1) samples video frames at 2 fps and feeds 16 kHz audio to
Whisper; the synchroniser then pairs them by time. That only works if the frames and the audio share one clock,
so this module decodes by presentation timestamps, never by frame or sample index:

- Clock: 0 is the start of the clip, the earliest first presentation time of its video and audio streams
  (after codec priming, which the decoder drops or which sits before the content, is not counted).
  ``audio[i]`` is at ``i / sample_rate`` and frame ``t`` stands for ``[t / fps, (t + 1) / fps)``.
- Frame rule: frame ``t`` is the source frame on screen at the centre of its interval, ``(t + 0.5) / fps``:
  the last source frame whose presentation time is at or before it. Variable frame rate and 29.97 fps are
  therefore sampled by time. Before the video stream's first frame (video starting late), frames are black.
  The video has ``ceil(video_end * fps)`` frames, ``video_end`` being the last frame's time plus its duration.
- Audio: all channels averaged to mono and resampled to ``sample_rate``; an audio stream that starts later than
  the clip is padded with silence at the front, gaps in its timestamps are filled with silence.

Decoding streams through the file: only the frames that are kept are converted and held, never the source
video at full frame rate. One concept per module: _source.py opens the file (nothing else is read; non-media
formats and truncated MP4 are refused), _frame_sampler.py samples the video, _audio_assembler.py assembles the
audio, limits.py bounds what is decoded; this module puts them on one clock and checks what came out against what
the file declares.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from favor_avsync._audio_assembler import AudioAssembler
from favor_avsync._frame_sampler import FrameSampler
from favor_avsync._source import MediaSource, declared_stream_end, decode, pick_streams, seconds
from favor_avsync.errors import MediaError, MissingMediaError
from favor_avsync.limits import MediaLimits, check_arguments

#: Container formats (FFmpeg demuxer names) that hold one still image.
_IMAGE_FORMATS = (
    "image2",
    "png_pipe",
    "jpeg_pipe",
    "bmp_pipe",
    "webp_pipe",
    "tiff_pipe",
)  # not GIF: it animates
#: Files longer than this (seconds) get a progress bar unless ``progress`` says otherwise.
PROGRESS_AFTER_SECONDS = 60.0


@dataclass
class MediaClip:
    """A decoded clip: frames and audio on one clock (0 = start of the clip, or of ``start`` if given).

    Attributes:
        frames: ``(T, 3, H, W)`` uint8 RGB frames at ``fps`` (frame ``t`` is the picture on screen at
            ``(t + 0.5) / fps``), or None when the file has no video.
        frame_times: ``(T,)`` float64 seconds, ``t / fps``: the start of frame ``t``'s interval (the same
            ``[t / fps, (t + 1) / fps)`` intervals as `favor_avsync.TemporalSynchroniser`). Empty without video.
        audio: ``(S,)`` float32 mono samples, ``audio[i]`` at ``i / sample_rate`` seconds, or None when the file
            has no audio.
        sample_rate: Samples per second of ``audio``.
        duration: Seconds from 0 to the end of the longer stream (after any cut). An image lasts ``1 / fps``.
        fps: Frames per second of ``frames``.
        source_times: ``(T,)`` float64 seconds (clip clock) at which each kept source frame was presented;
            NaN for black frames before the video starts. For checking what was sampled.
        name: The file name (or ``"<bytes>"``) for messages.
    """

    frames: torch.Tensor | None
    frame_times: torch.Tensor
    audio: torch.Tensor | None
    sample_rate: int
    duration: float
    fps: float
    source_times: torch.Tensor
    name: str

    @property
    def num_frames(self) -> int:
        """``T``, the number of frames (0 without video)."""
        return 0 if self.frames is None else int(self.frames.shape[0])


# ---------------------------------------------------------------------------------------------- entry point


def load_media(
    path_or_bytes: str | os.PathLike[str] | bytes | bytearray | memoryview,
    fps: float = 2.0,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    start: float | None = None,
    end: float | None = None,
    *,
    progress: bool | None = None,
    limits: MediaLimits | None = None,
) -> MediaClip:
    """Decode a video, audio or image file (or its bytes) into frames at ``fps`` and mono audio at ``sample_rate``.

    See the module docstring for the clock and the frame rule. Only the named file (or the given bytes) is read:
    a path is never an FFmpeg URL (``pipe:0`` or ``http://x`` are file names), and playlists or lists of other
    files are refused.

    Args:
        path_or_bytes: A file path, or the encoded file in memory.
        fps: Frames per second to sample (> 0, at most ``limits.max_fps``). FAVOR uses 2.
        sample_rate: Audio samples per second (in [1000, ``limits.max_sample_rate``]). Whisper needs 16000.
        max_seconds: Keep at most this many seconds (after ``start``); a longer clip is cut with a warning.
        start: Cut the clip from this time (seconds, on the file's clip clock); it becomes the new 0.
        end: Cut the clip at this time (seconds, on the file's clip clock).
        progress: Show a tqdm progress bar; None shows one for files over ``PROGRESS_AFTER_SECONDS``.
        limits: What is refused as too large (`MediaLimits`; default 40 megapixels per picture, 240 fps,
            384 kHz, 6 hours, 8 GiB of frames).

    Returns:
        The `MediaClip`.

    Raises:
        MissingMediaError: The file does not exist (also a ``FileNotFoundError``).
        MediaError: The file is empty, truncated, damaged or corrupt, not audio, video or an image (text,
            subtitles, a playlist), declares a stream that cannot be decoded, holds no video or audio stream, or is
            past a limit (a ``ValueError``; the message names the file, the problem and the remedy).
        ValueError: An argument is out of range.
        ImportError: PyAV is not installed (``pip install favor-avsync[media]``).
    """
    fps_frac, limits = check_arguments(fps, sample_rate, max_seconds, start, end, limits)
    av = _import_av()
    source = MediaSource(path_or_bytes, limits.max_pixels)
    return _Assembly(av, source, fps_frac, sample_rate, limits).run(start or 0.0, end, max_seconds, progress)


def _import_av() -> Any:
    try:
        import av
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "favor_avsync.load_media needs PyAV: pip install 'favor-avsync[media]' (or pip install av tqdm)"
        ) from err
    return av


# ---------------------------------------------------------------------------------------------- one clock


@dataclass
class _Declared:
    """What the container says before anything is decoded."""

    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    duration: float | None  # the container's, seconds
    video_end: float | None  # each stream's own end (file clock), when the container declares it
    audio_end: float | None
    is_image: bool


class _Assembly:
    """Puts the frame sampler's and the audio assembler's output on one clock and checks it against the file."""

    def __init__(
        self, av: Any, source: MediaSource, fps: Fraction, sample_rate: int, limits: MediaLimits
    ) -> None:
        self.av = av
        self.source = source
        self.fps = fps
        self.sample_rate = sample_rate
        self.limits = limits
        self.name = source.name

    def run(
        self, start: float, end: float | None, max_seconds: float | None, progress: bool | None
    ) -> MediaClip:
        declared = self._declared()
        sampler = FrameSampler(self.av, self.source, self.fps, self.limits)
        if declared.is_image:
            return self._image_clip(sampler.image())

        v_first = self._first_time("video") if declared.has_video else None
        a_first = self._first_time("audio") if declared.has_audio else None
        firsts = [t for t in (v_first, a_first) if t is not None]
        if not firsts:
            raise MediaError(
                f"{self.name}: no frame or audio sample could be decoded (corrupt or truncated?); re-download or "
                "re-encode the file"
            )
        for kind, has, first, codec in (
            ("video", declared.has_video, v_first, declared.video_codec),
            ("audio", declared.has_audio, a_first, declared.audio_codec),
        ):
            if has and first is None:
                raise MediaError(
                    f"{self.name}: damaged: it declares {'an' if kind == 'audio' else 'a'} {kind} stream ({codec}) but none of it could be decoded; "
                    f"re-encode the file, or remove that stream (ffmpeg -i IN -{kind[0]}n -c copy OUT)"
                )
        origin = min(firsts)

        # The window [w0, w1) on the file's timestamps; w1 from `end` and `max_seconds`.
        w0 = origin + start
        w1 = math.inf if end is None else origin + end
        limit = math.inf if max_seconds is None else w0 + max_seconds
        cut_by_limit = limit < w1
        w1 = min(w1, limit)
        total = (declared.duration - start) if declared.duration is not None else None
        self._check_duration(w0, w1, origin, declared.duration)
        show = progress if progress is not None else (total is not None and total > PROGRESS_AFTER_SECONDS)

        beyond = False
        audio_out = audio_end = None
        if declared.has_audio:
            assembler = AudioAssembler(self.av, self.source, self.sample_rate, self.limits)
            audio_out, audio_end, beyond_a = assembler.assemble(
                w0, w1, show and not declared.has_video, total
            )
            beyond |= beyond_a
        frames, source_times, video_end = None, np.zeros(0), None
        if declared.has_video:
            frames, source_times, video_end, beyond_v = sampler.sample(w0, w1, show, total)
            beyond |= beyond_v

        ends = [e for e in (video_end, audio_end) if e is not None]
        content_end = max(ends) if ends else w0
        if start > 0 and content_end <= w0:
            raise ValueError(
                f"start={start!r} s is at or past the end of {self.name} "
                f"({max(0.0, content_end - origin):.2f} s of content)"
            )
        self._check_complete(declared, origin, w1, beyond, end, video_end, audio_end, content_end)
        if beyond and cut_by_limit:
            warnings.warn(
                f"{self.name}: longer than max_seconds={max_seconds} (from {start:g} s); cut to {max_seconds} s",
                UserWarning,
                stacklevel=4,
            )
        n = frames.shape[0] if frames is not None else 0
        return MediaClip(
            frames=frames,
            frame_times=torch.arange(n, dtype=torch.float64) * (self.fps.denominator / self.fps.numerator),
            audio=audio_out,
            sample_rate=self.sample_rate,
            duration=max(0.0, min(content_end, w1) - w0),
            fps=float(self.fps),
            source_times=torch.from_numpy(np.asarray(source_times, dtype=np.float64) - w0),
            name=self.name,
        )

    def _declared(self) -> _Declared:
        with self.source.open(self.av) as container:
            video, audio = pick_streams(container)
            if video is None and audio is None:
                raise MediaError(
                    f"{self.name}: holds no video or audio stream (streams: "
                    f"{[s.type for s in container.streams] or 'none'}); give a video, audio or image file"
                )
            fmt = container.format.name
            return _Declared(
                has_video=video is not None,
                has_audio=audio is not None,
                video_codec=video.codec_context.name if video is not None else None,
                audio_codec=audio.codec_context.name if audio is not None else None,
                duration=container.duration / 1_000_000 if container.duration else None,
                video_end=declared_stream_end(video) if video is not None else None,
                audio_end=declared_stream_end(audio) if audio is not None else None,
                is_image=video is not None
                and audio is None
                and any(f in _IMAGE_FORMATS for f in fmt.split(",")),
            )

    def _first_time(self, kind: str) -> float | None:
        """Presentation time (s) of the first decoded frame of the first ``kind`` stream."""
        with self.source.open(self.av) as container:
            video, audio = pick_streams(container)
            stream = video if kind == "video" else audio
            for frame in decode(self.av, container, stream, self.name):
                t = seconds(frame)
                return 0.0 if t is None else t
            return None

    def _check_duration(self, w0: float, w1: float, origin: float, declared: float | None) -> None:
        """Refuse a window longer than ``max_duration`` before decoding, when the file declares its length."""
        stop = w1 if declared is None else min(w1, origin + declared)
        if math.isfinite(stop) and stop - w0 > self.limits.max_duration:
            raise MediaError(
                f"{self.name}: {stop - w0:.6g} s to decode, over limits.max_duration={self.limits.max_duration:g} s; "
                "pass max_seconds= or start=/end= for a part, or limits=favor_avsync.MediaLimits(max_duration=...)"
            )

    def _check_complete(
        self,
        declared: _Declared,
        origin: float,
        w1: float,
        beyond: bool,
        end: float | None,
        video_end: float | None,
        audio_end: float | None,
        content_end: float,
    ) -> None:
        """A file that stops decoding well before its declared length was cut short or damaged: say what is
        missing (each stream against its own declared end, then the clip against the container's duration)."""
        if beyond or end is not None:
            return  # the window stopped before the declared end: nothing to compare

        def short(decoded: float, expected: float) -> bool:
            return decoded < expected - max(1.0, 0.1 * (expected - origin))

        for kind, got, want in (
            ("video", video_end, declared.video_end),
            ("audio", audio_end, declared.audio_end),
        ):
            if got is not None and want is not None and want <= w1 and short(got, want):
                raise MediaError(
                    f"{self.name}: truncated or damaged: its {kind} stream declares {want - origin:.2f} s but "
                    f"decoding stops at {got - origin:.2f} s ({want - got:.2f} s of {kind} missing); re-download "
                    "or re-encode the file"
                )
        if declared.duration is not None and short(content_end, origin + declared.duration):
            decoded = content_end - origin
            streams = ", ".join(
                f"{kind} to {e - origin:.2f} s"
                for kind, e in (("video", video_end), ("audio", audio_end))
                if e
            )
            raise MediaError(
                f"{self.name}: truncated: it declares {declared.duration:.2f} s but only {decoded:.2f} s could be "
                f"decoded ({streams}; {declared.duration - decoded:.2f} s missing); re-download or re-encode the file"
            )

    def _image_clip(self, frames: torch.Tensor) -> MediaClip:
        return MediaClip(
            frames=frames,
            frame_times=torch.zeros(1, dtype=torch.float64),
            audio=None,
            sample_rate=self.sample_rate,
            duration=float(1 / self.fps),
            fps=float(self.fps),
            source_times=torch.zeros(1, dtype=torch.float64),
            name=self.name,
        )


__all__ = [
    "PROGRESS_AFTER_SECONDS",
    "MediaClip",
    "MediaError",
    "MediaLimits",
    "MissingMediaError",
    "load_media",
]
