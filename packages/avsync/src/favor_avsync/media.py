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
video at full frame rate.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from favor_avsync._clock import as_fraction, frames_for_seconds

#: Container formats (FFmpeg demuxer names) that hold one still image.
_IMAGE_FORMATS = (
    "image2",
    "png_pipe",
    "jpeg_pipe",
    "bmp_pipe",
    "webp_pipe",
    "tiff_pipe",
)  # not GIF: it animates
#: Encoder delay (priming samples) assumed for raw ADTS AAC, which cannot declare it (FFmpeg's and most AAC-LC
#: encoders use 1024).
_ADTS_PRIMING = 1024
#: Float slack (seconds) when comparing a sampling instant with a source frame's timestamp.
_TIME_SLACK = 1e-6
#: Seconds decoded before ``start`` after an audio seek, so the first kept packets decode as in a full pass
#: (AAC and MP3 need one to a few frames, Opus recommends 80 ms).
_AUDIO_PREROLL = 0.5
#: Files longer than this (seconds) get a progress bar unless ``progress`` says otherwise.
PROGRESS_AFTER_SECONDS = 60.0


class MediaError(ValueError):
    """A media file that cannot be decoded: empty, truncated, corrupt, or without usable streams."""


class MissingMediaError(MediaError, FileNotFoundError):
    """The media file does not exist."""


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
) -> MediaClip:
    """Decode a video, audio or image file (or its bytes) into frames at ``fps`` and mono audio at ``sample_rate``.

    See the module docstring for the clock and the frame rule.

    Args:
        path_or_bytes: A file path, or the encoded file in memory.
        fps: Frames per second to sample (> 0). FAVOR uses 2.
        sample_rate: Audio samples per second (> 0). Whisper needs 16000.
        max_seconds: Keep at most this many seconds (after ``start``); a longer clip is cut with a warning.
        start: Cut the clip from this time (seconds, on the file's clip clock); it becomes the new 0.
        end: Cut the clip at this time (seconds, on the file's clip clock).
        progress: Show a tqdm progress bar; None shows one for files over ``PROGRESS_AFTER_SECONDS``.

    Returns:
        The `MediaClip`.

    Raises:
        MissingMediaError: The file does not exist (also a ``FileNotFoundError``).
        MediaError: The file is empty, truncated or corrupt, or holds no video or audio stream (a ``ValueError``).
        ValueError: An argument is out of range.
        ImportError: PyAV is not installed (``pip install favor-avsync[media]``).
    """
    fps_frac = as_fraction(fps, "fps")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be an int > 0, got {sample_rate!r}")
    for arg, value in (("max_seconds", max_seconds), ("start", start), ("end", end)):
        if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ValueError(f"{arg} must be a finite number of seconds or None, got {value!r}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds!r}")
    if start is not None and start < 0:
        raise ValueError(f"start must be >= 0 seconds, got {start!r}")
    if end is not None and end <= (start or 0.0):
        raise ValueError(f"end must be after start, got start={start!r}, end={end!r}")

    av = _import_av()
    source = _Source(path_or_bytes)
    decoder = _Decoder(av, source, fps_frac, sample_rate)
    return decoder.run(start or 0.0, end, max_seconds, progress)


def _import_av() -> Any:
    try:
        import av
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "favor_avsync.load_media needs PyAV: pip install 'favor-avsync[media]' (or pip install av tqdm)"
        ) from err
    return av


# ---------------------------------------------------------------------------------------------- plumbing


class _Source:
    """A path or bytes that can be opened several times, with a name for messages."""

    def __init__(self, path_or_bytes: Any) -> None:
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            self.data: bytes | None = bytes(path_or_bytes)
            self.path: Path | None = None
            self.name = f"<bytes: {len(self.data)} bytes>"
            if not self.data:
                raise MediaError("path_or_bytes: the media bytes are empty (0 bytes)")
            return
        if not isinstance(path_or_bytes, (str, os.PathLike)):
            raise ValueError(
                f"path_or_bytes must be a file path or bytes, got {type(path_or_bytes).__name__}: {path_or_bytes!r}"
            )
        self.path = Path(path_or_bytes)
        self.data = None
        self.name = str(self.path)
        if not self.path.exists():
            raise MissingMediaError(f"{self.name}: no such media file")
        if self.path.is_dir():
            raise MediaError(f"{self.name}: is a directory, not a media file")
        if self.path.stat().st_size == 0:
            raise MediaError(f"{self.name}: the file is empty (0 bytes)")

    def open(self, av: Any) -> Any:
        target: Any = io.BytesIO(self.data) if self.data is not None else str(self.path)
        try:
            return av.open(target, mode="r")
        except av.FFmpegError as err:
            raise MediaError(
                f"{self.name}: not a readable media file (corrupt or truncated?): {err}"
            ) from err


def _stream_pick(container: Any) -> tuple[Any | None, Any | None]:
    video = next((s for s in container.streams.video if not _is_attached_picture(s)), None)
    audio = next(iter(container.streams.audio), None)
    return video, audio


def _is_attached_picture(stream: Any) -> bool:
    try:
        return bool(stream.disposition & stream.disposition.__class__.attached_pic)
    except (AttributeError, TypeError):  # pragma: no cover - very old PyAV
        return False


def _seconds(frame: Any) -> float | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base)


class _Decoder:
    def __init__(self, av: Any, source: _Source, fps: Fraction, sample_rate: int) -> None:
        self.av = av
        self.source = source
        self.fps = fps
        self.sample_rate = sample_rate
        self.name = source.name

    # --------------------------------------------------------------------------------- orchestration

    def run(
        self, start: float, end: float | None, max_seconds: float | None, progress: bool | None
    ) -> MediaClip:
        container = self.source.open(self.av)
        try:
            video, audio = _stream_pick(container)
            if video is None and audio is None:
                raise MediaError(f"{self.name}: holds no video or audio stream")
            fmt = container.format.name
            declared = container.duration / 1_000_000 if container.duration else None
            is_image = (
                video is not None and audio is None and any(f in _IMAGE_FORMATS for f in fmt.split(","))
            )
        finally:
            container.close()
        if is_image:
            return self._image()

        v_first = self._first_time("video") if video is not None else None
        a_first = self._first_time("audio") if audio is not None else None
        firsts = [t for t in (v_first, a_first) if t is not None]
        if not firsts:
            raise MediaError(
                f"{self.name}: no frame or audio sample could be decoded (corrupt or truncated?)"
            )
        origin = min(firsts)

        # The window [w0, w1) on the file's timestamps; w1 from `end` and `max_seconds`.
        w0 = origin + start
        w1 = math.inf if end is None else origin + end
        limit = math.inf if max_seconds is None else w0 + max_seconds
        cut_by_limit = limit < w1
        w1 = min(w1, limit)
        total = (declared - start) if declared is not None else None
        show = progress if progress is not None else (total is not None and total > PROGRESS_AFTER_SECONDS)

        beyond = False
        audio_out = None
        audio_end = None
        if audio is not None:
            audio_out, audio_end, beyond_a = self._audio(w0, w1, show and video is None, total)
            beyond |= beyond_a
        frames, source_times, video_end = None, np.zeros(0), None
        if video is not None:
            frames, source_times, video_end, beyond_v = self._video(w0, w1, show, total)
            beyond |= beyond_v

        ends = [e for e in (video_end, audio_end) if e is not None]
        content_end = max(ends) if ends else w0
        if start > 0 and content_end <= w0:
            raise ValueError(
                f"start={start!r} s is at or past the end of {self.name} "
                f"({max(0.0, content_end - origin):.2f} s of content)"
            )
        if declared is not None and not beyond and end is None:
            # A file that stops decoding well before its declared length was cut short on disk.
            decoded = content_end - origin
            if decoded < declared - max(1.0, 0.1 * declared):
                raise MediaError(
                    f"{self.name}: truncated: it declares {declared:.2f} s but only {decoded:.2f} s could be decoded"
                )
        if beyond and cut_by_limit:
            warnings.warn(
                f"{self.name}: longer than max_seconds={max_seconds} (from {start:g} s); cut to {max_seconds} s",
                UserWarning,
                stacklevel=3,
            )
        duration = max(0.0, min(content_end, w1) - w0)
        n = frames.shape[0] if frames is not None else 0
        frame_times = torch.arange(n, dtype=torch.float64) * (self.fps.denominator / self.fps.numerator)
        return MediaClip(
            frames=frames,
            frame_times=frame_times,
            audio=audio_out,
            sample_rate=self.sample_rate,
            duration=duration,
            fps=float(self.fps),
            source_times=torch.from_numpy(np.asarray(source_times, dtype=np.float64) - w0),
            name=self.name,
        )

    def _decode(self, container: Any, stream: Any) -> Iterator[Any]:
        """Frames of ``stream``, turning FFmpeg errors into a MediaError that names the file."""
        try:
            yield from container.decode(stream)
        except self.av.FFmpegError as err:
            raise MediaError(
                f"{self.name}: decoding the {stream.type} stream failed (corrupt?): {err}"
            ) from err

    def _first_time(self, kind: str) -> float | None:
        """Presentation time (s) of the first decoded frame of the first ``kind`` stream."""
        container = self.source.open(self.av)
        try:
            video, audio = _stream_pick(container)
            stream = video if kind == "video" else audio
            for frame in self._decode(container, stream):
                t = _seconds(frame)
                return 0.0 if t is None else t
            return None
        finally:
            container.close()

    # --------------------------------------------------------------------------------- images

    def _image(self) -> MediaClip:
        container = self.source.open(self.av)
        try:
            video, _ = _stream_pick(container)
            frame = next(iter(self._decode(container, video)), None)
            if frame is None:
                raise MediaError(f"{self.name}: the image could not be decoded (corrupt or truncated?)")
            rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
        finally:
            container.close()
        frames = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
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

    # --------------------------------------------------------------------------------- audio

    def _audio(
        self, w0: float, w1: float, show: bool, total: float | None
    ) -> tuple[torch.Tensor, float, bool]:
        """Mono float32 audio of ``[w0, w1)`` at ``sample_rate``; its end time; whether content lay beyond w1."""
        sr = self.sample_rate
        container = self.source.open(self.av)
        bar = _progress(show, total, f"audio {Path(self.name).name}")
        chunks: list[np.ndarray] = []  # resampled mono pieces, contiguous from `first`
        first: float | None = None
        produced = 0  # samples in `chunks`
        expected: float | None = None  # time of the next input sample if the stream is contiguous
        resampler = None
        beyond = False
        try:
            _, stream = _stream_pick(container)
            # Raw ADTS AAC has no container to say how many priming samples the encoder put first (MP4 and
            # Matroska do, and the decoder drops them); assume the usual AAC encoder delay of 1024 samples.
            # Shifting every timestamp back by the delay puts the priming before 0, where the window cuts it off.
            adts = container.format.name == "aac" and stream.codec_context.name == "aac"
            shift = _ADTS_PRIMING / stream.codec_context.sample_rate if adts else 0.0
            declared_end = None
            if stream.duration is not None and stream.start_time is not None and stream.time_base is not None:
                declared_end = float((stream.start_time + stream.duration) * stream.time_base)
            if w0 > 1.0:  # jump near the start instead of decoding everything before it
                # ... but a little before it: lossy codecs decode a packet from the ones before it (MDCT overlap,
                # the MP3 bit reservoir, Opus pre-roll); the pre-roll frames end before w0 and are skipped below.
                _seek(container, stream, w0 - _AUDIO_PREROLL)
            # The first frame after a seek is trimmed by the decoder (Opus pre-skip) and its timestamp rounded
            # twice: it does not anchor the sample clock below.
            untrusted = w0 > 1.0
            for frame in self._decode(container, stream):
                t = _seconds(frame)
                t = (expected if expected is not None else 0.0) if t is None else t - shift
                if expected is not None and abs(t - expected) <= 1e-3:
                    # Contiguous: follow the decoded samples, not timestamps rounded to the container's tick
                    # (WebM's 1 ms puts Opus packets 0.5 ms off after the pre-skip).
                    t = expected
                frame_end = t + frame.samples / frame.sample_rate
                if frame_end <= w0:
                    expected = None if untrusted else frame_end
                    untrusted = False
                    continue
                untrusted = False
                if t >= w1:
                    beyond = True
                    break
                if first is None:
                    first = t
                elif expected is not None and t > expected + 1e-3:
                    # A gap in the timestamps: fill it with silence to stay on the clock. The resampler still
                    # holds samples from before the gap: drain it first so they are counted and come before the
                    # silence (a fresh one takes over after the gap).
                    if resampler is not None:
                        for out in resampler.resample(None):
                            mono = out.to_ndarray().mean(axis=0, dtype=np.float64).astype(np.float32)
                            chunks.append(mono)
                            produced += mono.shape[0]
                        resampler = None
                    gap = round((t - first) * sr) - produced
                    if gap > 0:
                        chunks.append(np.zeros(gap, dtype=np.float32))
                        produced += gap
                expected = frame_end
                if resampler is None:
                    resampler = self.av.AudioResampler(format="fltp", layout=frame.layout.name, rate=sr)
                for out in resampler.resample(frame):
                    mono = out.to_ndarray().mean(axis=0, dtype=np.float64).astype(np.float32)
                    chunks.append(mono)
                    produced += mono.shape[0]
                if bar is not None:
                    bar.update(max(0.0, frame_end - w0 - bar.n))
            if resampler is not None:
                for out in resampler.resample(None):
                    mono = out.to_ndarray().mean(axis=0, dtype=np.float64).astype(np.float32)
                    chunks.append(mono)
                    produced += mono.shape[0]
        finally:
            container.close()
            if bar is not None:
                bar.close()
        if first is None and beyond:  # the stream starts at or after w1: silent over the whole window
            return torch.zeros(round((w1 - w0) * sr), dtype=torch.float32), w1, beyond
        if first is None:  # the stream ended before the window
            return torch.zeros(0, dtype=torch.float32), None, beyond
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        if declared_end is not None and first + samples.shape[0] / sr > declared_end:
            # The encoder's trailing padding (AAC fills its last 1024-sample frame) is not content: an MP4 edit
            # list declares where the stream ends. Trust it only for such a small excess.
            excess = first + samples.shape[0] / sr - declared_end
            if excess <= 0.5:
                samples = samples[: max(0, round((declared_end - first) * sr))]
        # Place on the clock: silence before a late start, drop what lies before w0 or after w1.
        offset = round((first - w0) * sr)
        if offset > 0:
            samples = np.concatenate([np.zeros(offset, dtype=np.float32), samples])
        elif offset < 0:
            samples = samples[-offset:]
        if math.isfinite(w1):
            limit = round((w1 - w0) * sr)
            if samples.shape[0] > limit:
                beyond |= samples.shape[0] - limit > sr // 1000  # more than 1 ms of content past the end
                samples = samples[:limit]
        end = w0 + samples.shape[0] / sr
        return torch.from_numpy(np.ascontiguousarray(samples)), end, beyond

    # --------------------------------------------------------------------------------- video

    def _video(
        self, w0: float, w1: float, show: bool, total: float | None
    ) -> tuple[torch.Tensor, np.ndarray, float, bool]:
        """Frames of ``[w0, w1)`` at ``fps`` by the centre rule; source times; the video's end; beyond-w1 flag."""
        fps = self.fps
        step = fps.denominator / fps.numerator  # seconds per output frame
        container = self.source.open(self.av)
        bar = _progress(show, total, f"video {Path(self.name).name}")
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
            stream, _ = _stream_pick(container)
            stream.thread_type = "AUTO"
            width, height = stream.codec_context.width, stream.codec_context.height
            if w0 > 1.0:
                _seek(container, stream, w0)
            for frame in self._decode(container, stream):
                p = _seconds(frame)
                if p is None:  # no timestamp: assume the nominal rate
                    rate = stream.guessed_rate or stream.average_rate or 25
                    p = (prev[1] + 1 / float(rate)) if prev is not None else w0
                if prev is not None and p <= prev[1]:
                    continue  # a duplicate or out-of-order timestamp never goes back in time
                if p >= w1:
                    beyond = True
                    next_time = p
                    break
                # Emit every output frame whose centre lies before this frame: the previous frame shows there.
                # (1 us of slack: a source frame exactly at a centre is "at or before" it even when the float sum
                # start + (t + 0.5) / fps rounds just below its timestamp, as 0.09 + 0.25 does below 0.34.)
                while w0 + (t_out + 0.5) * step < p - _TIME_SLACK and t_out * step < w1 - w0:
                    if prev is None:
                        if black is None:
                            black = np.zeros(
                                (3, height or frame.height, width or frame.width), dtype=np.uint8
                            )
                        kept.append(black)
                        kept_times.append(math.nan)
                    else:
                        if prev_rgb is None:
                            prev_rgb = _rgb(prev[0])
                        kept.append(prev_rgb)
                        kept_times.append(prev[1])
                    t_out += 1
                if prev is not None:
                    last_gap = p - prev[1]
                prev, prev_rgb = (frame, p), None
                if bar is not None:
                    bar.update(max(0.0, p - w0 - bar.n))
            if prev is None and next_time is None:
                raise MediaError(
                    f"{self.name}: no video frame could be decoded in [{w0:.2f}, {w1:.2f}) s (corrupt or truncated?)"
                )
            if prev is None:
                # The video starts at or after w1: black over the whole window, as before any late start.
                video_end = w1
                n_total = frames_for_seconds(video_end - w0, fps)
                black = np.zeros((3, height or frame.height, width or frame.width), dtype=np.uint8)
                kept += [black] * (n_total - t_out)
                kept_times += [math.nan] * (n_total - t_out)
                t_out = n_total
            else:
                frame, p = prev
                # The last kept frame is on screen until the next one; only at the real end of the stream does
                # its duration have to be guessed (its own, else the last gap, else the nominal rate).
                duration = (
                    next_time - p if next_time is not None else _frame_duration(frame, stream, last_gap)
                )
                beyond |= p + duration > w1 + 1e-3  # the last frame is still on screen past the end
                video_end = min(p + duration, w1)
                n_total = frames_for_seconds(video_end - w0, fps)
                while t_out < n_total:
                    if prev_rgb is None:
                        prev_rgb = _rgb(frame)
                    kept.append(prev_rgb)
                    kept_times.append(p)
                    t_out += 1
        finally:
            container.close()
            if bar is not None:
                bar.close()
        frames = (
            torch.from_numpy(np.stack(kept)) if kept else torch.zeros(0, 3, height, width, dtype=torch.uint8)
        )
        return frames, np.asarray(kept_times, dtype=np.float64), video_end, beyond


def _rgb(frame: Any) -> np.ndarray:
    """``(3, H, W)`` uint8 RGB of a video frame."""
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24").transpose(2, 0, 1))


def _frame_duration(frame: Any, stream: Any, last_gap: float | None) -> float:
    """How long the last frame stays on screen: its own duration, else the last gap, else the nominal rate."""
    dur = getattr(frame, "duration", None)
    if dur and frame.time_base is not None and dur > 0:
        return float(dur * frame.time_base)
    if last_gap is not None and last_gap > 0:
        return last_gap
    rate = stream.guessed_rate or stream.average_rate
    return 1 / float(rate) if rate else 0.04


def _seek(container: Any, stream: Any, seconds: float) -> None:
    """Seek to the key frame at or before ``seconds`` (decoding then continues forward from there)."""
    if stream.time_base is None:
        return
    container.seek(int(seconds / stream.time_base), stream=stream, backward=True, any_frame=False)


def _progress(show: bool, total: float | None, desc: str) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm  # lazily: tqdm is the [media] extra

    return tqdm(total=round(total, 1) if total else None, desc=desc, unit="s", leave=False)
