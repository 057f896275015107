"""Synthetic media with known timing, for tests and demos (needs the ``[media]`` extra: PyAV).

`make_test_clip` writes a real media file (or bytes) whose video frames change colour at known times
and whose audio holds a tone burst at a known time. The returned `ClipSpec` is the ground truth: the
colour a frame must have at any time, the presentation time of every source frame, the tone onset.

Colour schedule: the picture at time ``tau`` (seconds, clip clock) is
``colours[floor(tau / colour_period) % len(colours)]``. Every colour change falls on a source frame (the
variable-frame-rate pattern puts a frame on each change), so "the frame showing at ``tau``" has exactly the
colour of ``tau``.

Example:
    >>> from favor_avsync.testing import make_test_clip   # doctest: +SKIP
    >>> spec = make_test_clip("clip.mp4", duration=2.0, fps=25.0, tone_at=1.0)   # doctest: +SKIP
    >>> spec.colour_at(0.7)   # doctest: +SKIP
    (0, 255, 0)
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

#: Saturated colours that survive yuv420p + h264 compression far apart from each other (RGB).
DEFAULT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 255),
    (0, 0, 0),
    (255, 255, 0),
)

Container = Literal["mp4", "mkv", "webm", "wav", "flac", "mp3", "m4a", "aac", "ogg", "png", "jpg"]

_AUDIO_ONLY = ("wav", "flac", "mp3", "m4a", "aac", "ogg")
_VIDEO_CODEC = {"mp4": "libx264", "mkv": "libx264", "webm": "libvpx-vp9"}
_AUDIO_CODEC = {
    "mp4": "aac",
    "mkv": "pcm_s16le",
    "webm": "libopus",
    "wav": "pcm_s16le",
    "flac": "flac",
    "mp3": "libmp3lame",
    "m4a": "aac",
    "aac": "aac",
    "ogg": "libopus",
}
_FORMAT = {
    "mp4": "mp4",
    "mkv": "matroska",
    "webm": "webm",
    "wav": "wav",
    "flac": "flac",
    "mp3": "mp3",
    "m4a": "ipod",
    "aac": "adts",
    "ogg": "ogg",
    "png": "image2pipe",
    "jpg": "image2pipe",
}
_IMAGES = ("png", "jpg")


@dataclass(frozen=True)
class ClipSpec:
    """Ground truth of a clip written by `make_test_clip`.

    Attributes:
        path: Where the clip was written, or None if it was returned as ``data``.
        data: The encoded bytes when no path was given.
        container: The file type given to `make_test_clip`.
        duration: Seconds of video (or audio for audio-only files) from the clip start.
        fps: Nominal frame rate of the video (for VFR, the mean rate of the pattern).
        size: ``(width, height)`` of the frames.
        colours: The colour cycle (RGB).
        colour_period: Seconds between colour changes.
        frame_times: Presentation time (seconds) of every source frame written, ascending.
        tone_at: Onset of the tone burst (seconds, clip clock), or None without audio.
        tone_seconds: Length of the burst.
        tone_hz: Frequency of the burst.
        audio_offset: Seconds after the clip start at which the audio stream starts.
        sample_rate: Sample rate of the audio stream written.
        channels: Audio channels written (the tone is in channel 0); 0 without audio.
        has_video: Whether the file holds a video (or image) stream.
        has_audio: Whether the file holds an audio stream.
    """

    path: Path | None
    data: bytes | None
    container: str
    duration: float
    fps: float
    size: tuple[int, int]
    colours: tuple[tuple[int, int, int], ...]
    colour_period: float
    frame_times: tuple[float, ...] = field(repr=False)
    tone_at: float | None
    tone_seconds: float
    tone_hz: float
    audio_offset: float
    sample_rate: int
    channels: int
    has_video: bool
    has_audio: bool

    @property
    def source(self) -> Path | bytes:
        """What to pass to `favor_avsync.load_media`: the path, or the bytes."""
        if self.path is not None:
            return self.path
        assert self.data is not None  # written by make_test_clip: one of the two is set
        return self.data

    def colour_index_at(self, time: float) -> int:
        """Index into ``colours`` of the picture at ``time`` seconds."""
        return math.floor(time / self.colour_period + 1e-9) % len(self.colours)

    def colour_at(self, time: float) -> tuple[int, int, int]:
        """RGB colour of the picture at ``time`` seconds."""
        return self.colours[self.colour_index_at(time)]

    def frame_showing_at(self, time: float) -> float | None:
        """Presentation time of the source frame on screen at ``time`` (the last one at or before it)."""
        shown = [t for t in self.frame_times if t <= time + 1e-9]
        return shown[-1] if shown else None


def nearest_colour(
    pixel_rgb: Sequence[float], colours: Sequence[tuple[int, int, int]] = DEFAULT_COLOURS
) -> int:
    """Index of the colour in ``colours`` nearest to ``pixel_rgb`` (Euclidean in RGB)."""
    p = np.asarray(pixel_rgb, dtype=np.float64)
    return int(np.argmin([np.sum((p - np.asarray(c, dtype=np.float64)) ** 2) for c in colours]))


def tone_onset(audio: np.ndarray, sample_rate: int, threshold: float = 0.25) -> float | None:
    """Time (seconds) of the first sample whose magnitude exceeds ``threshold`` times the peak.

    Args:
        audio: ``(S,)`` mono samples.
        sample_rate: Samples per second.
        threshold: Fraction of the peak magnitude that counts as the onset.

    Returns:
        The onset time, or None for silence.
    """
    mag = np.abs(np.asarray(audio, dtype=np.float64))
    if mag.size == 0 or mag.max() <= 0:
        return None
    return float(np.argmax(mag > threshold * mag.max())) / sample_rate


def _vfr_times(duration: float, fps: float, period: float) -> list[float]:
    """Irregular frame times with a frame on every colour change (gaps of 0.5, 1.5 and 1 nominal frames)."""
    times: list[float] = []
    pattern = (0.5, 1.5, 1.0)
    n_periods = math.ceil(duration / period - 1e-9)
    for p in range(n_periods):
        start, stop = p * period, min((p + 1) * period, duration)
        t, i = start, 0
        while t < stop - 1e-9:
            times.append(round(t, 6))
            t += pattern[i % len(pattern)] / fps
            i += 1
    return times


def _tone(
    spec_tone_at: float | None, n: int, sample_rate: int, offset: float, seconds: float, hz: float
) -> np.ndarray:
    """``(n,)`` float32 samples of the stream that starts ``offset`` s into the clip: a burst at ``tone_at``."""
    t = offset + np.arange(n, dtype=np.float64) / sample_rate
    out = np.zeros(n, dtype=np.float64)
    if spec_tone_at is not None:
        on = (t >= spec_tone_at) & (t < spec_tone_at + seconds)
        out[on] = 0.5 * np.sin(2 * np.pi * hz * (t[on] - spec_tone_at))
    return out.astype(np.float32)


def make_test_clip(
    path: str | Path | None = None,
    *,
    container: Container = "mp4",
    duration: float = 2.0,
    fps: float = 25.0,
    size: tuple[int, int] = (64, 48),
    colours: Sequence[tuple[int, int, int]] = DEFAULT_COLOURS,
    colour_period: float = 0.3,
    audio: bool = True,
    video: bool = True,
    tone_at: float | None = 1.0,
    tone_seconds: float = 0.2,
    tone_hz: float = 1000.0,
    audio_offset: float = 0.0,
    video_offset: float = 0.0,
    channels: int = 1,
    sample_rate: int = 16000,
    vfr: bool = False,
    keyframe_interval: int | None = None,
) -> ClipSpec:
    """Write a clip with known colour changes and a known tone burst.

    ``mp4`` holds h264 + AAC, ``mkv`` h264 + 16-bit PCM, ``webm`` VP9 + Opus; ``wav``, ``flac``, ``mp3``,
    ``m4a`` (AAC in MP4), ``aac`` (raw ADTS) and ``ogg`` (Opus) are audio only; ``png``/``jpg`` are one still
    image (colour ``colours[0]``).

    Args:
        path: File to write; None returns the encoded bytes in ``ClipSpec.data``.
        container: The file type (see above).
        duration: Seconds of video (and of audio, counted from the clip start).
        fps: Frame rate; ``30000 / 1001`` gives NTSC 29.97 fps exactly.
        size: ``(width, height)``, both even (yuv420p).
        colours: The colour cycle (RGB tuples).
        colour_period: Seconds between colour changes.
        audio: Write an audio stream (ignored for images).
        video: Write a video stream (False is the same as an audio-only container).
        tone_at: Onset of the 0.5-amplitude tone burst, seconds on the clip clock; None for silence.
        tone_seconds: Length of the burst.
        tone_hz: Frequency of the burst.
        audio_offset: The audio stream starts this many seconds after the clip start (its timestamps say so).
        video_offset: The video stream starts this many seconds after the clip start (its first frame's time).
        channels: Audio channels; the tone is in channel 0 only, the others are silent (so a mono mix that
            averages the channels has amplitude ``0.5 / channels``).
        sample_rate: Sample rate of the written audio.
        vfr: Variable frame rate: irregular gaps of 0.5, 1.5 and 1 nominal frames, a frame on every colour
            change (millisecond timestamps).
        keyframe_interval: Frames between h264 key frames (None: the encoder's default, 250), e.g. to make
            seeking jump.

    Returns:
        The `ClipSpec` ground truth.
    """
    import av  # lazily: PyAV is the [media] extra

    if container not in _FORMAT:
        raise ValueError(f"container must be one of {', '.join(_FORMAT)}; got {container!r}")
    width, height = size
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"size must be positive even (width, height), got {size!r}")
    if duration <= 0:
        raise ValueError(f"duration must be > 0, got {duration!r}")
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels!r}")
    if not 0 <= video_offset < duration or not 0 <= audio_offset < duration:
        raise ValueError(
            f"audio_offset and video_offset must be in [0, duration={duration}), got {audio_offset!r}, {video_offset!r}"
        )
    colours = tuple(tuple(int(v) for v in c) for c in colours)
    has_video = video and container not in _AUDIO_ONLY
    has_audio = audio and container not in _IMAGES
    if container in _IMAGES:
        frame_times: list[float] = [0.0]
    elif not has_video:
        frame_times = []
    elif vfr:
        frame_times = [t for t in _vfr_times(duration, fps, colour_period) if t >= video_offset - 1e-9]
    else:
        rate = Fraction(fps).limit_denominator(10_000)
        first = Fraction(video_offset).limit_denominator(1_000_000)
        count = math.ceil(
            (Fraction(duration).limit_denominator(1_000_000) - first) * rate - Fraction(1, 10**9)
        )
        frame_times = [float(first + i / rate) for i in range(count)]

    spec_kwargs = dict(
        container=container,
        duration=float(duration),
        fps=float(fps),
        size=(width, height),
        colours=colours,
        colour_period=float(colour_period),
        frame_times=tuple(frame_times),
        tone_at=tone_at if has_audio else None,
        tone_seconds=float(tone_seconds),
        tone_hz=float(tone_hz),
        audio_offset=float(audio_offset) if has_audio else 0.0,
        sample_rate=int(sample_rate),
        channels=int(channels) if has_audio else 0,
        has_video=has_video,
        has_audio=has_audio,
    )
    spec = ClipSpec(path=Path(path) if path is not None else None, data=None, **spec_kwargs)

    sink: io.BytesIO | str = io.BytesIO() if path is None else str(path)
    with av.open(sink, mode="w", format=_FORMAT[container]) as out:
        if container in _IMAGES:
            _write_image(out, spec, container)
        else:
            _write_av(out, spec, container, vfr, keyframe_interval)
    if path is None:
        assert isinstance(sink, io.BytesIO)
        return ClipSpec(path=None, data=sink.getvalue(), **spec_kwargs)
    return spec


def _solid(spec: ClipSpec, colour: tuple[int, int, int]) -> np.ndarray:
    width, height = spec.size
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = colour
    return img


def _write_image(out, spec: ClipSpec, container: str) -> None:
    import av

    codec, pix = ("png", "rgb24") if container == "png" else ("mjpeg", "yuvj420p")
    stream = out.add_stream(codec, rate=1)
    stream.width, stream.height = spec.size
    stream.pix_fmt = pix
    frame = av.VideoFrame.from_ndarray(_solid(spec, spec.colours[0]), format="rgb24").reformat(format=pix)
    frame.pts = 0
    for packet in stream.encode(frame):
        out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def _write_av(out, spec: ClipSpec, container: str, vfr: bool, keyframe_interval: int | None) -> None:
    import av

    v_stream = a_stream = None
    if spec.has_video:
        rate = Fraction(spec.fps).limit_denominator(10_000)
        v_stream = out.add_stream(_VIDEO_CODEC[container], rate=rate)
        v_stream.width, v_stream.height = spec.size
        v_stream.pix_fmt = "yuv420p"
        if container == "webm":
            v_stream.options = {"deadline": "realtime", "cpu-used": "8"}
        else:
            # veryfast keeps B-frames, so decode order differs from presentation order as in real files.
            v_stream.options = {"preset": "veryfast"}
        if keyframe_interval is not None:
            v_stream.options = {**v_stream.options, "g": str(keyframe_interval), "keyint_min": "1"}
        # Millisecond ticks for VFR or a late video start, one tick per frame otherwise.
        fine = vfr or spec.frame_times[0] != 0
        v_stream.codec_context.time_base = Fraction(1, 1000) if fine else 1 / rate
        v_stream.time_base = v_stream.codec_context.time_base
    if spec.has_audio:
        a_stream = out.add_stream(_AUDIO_CODEC[container], rate=spec.sample_rate)
        a_stream.layout = "mono" if spec.channels == 1 else "stereo"
        a_stream.codec_context.time_base = Fraction(1, spec.sample_rate)

    # Interleave by time so muxers see a realistic file: video frames and 20 ms audio chunks.
    events: list[tuple[float, str, int]] = []
    if v_stream is not None:
        events += [(t, "v", i) for i, t in enumerate(spec.frame_times)]
    if a_stream is not None:
        n_total = max(0, round((spec.duration - spec.audio_offset) * spec.sample_rate))
        samples = _tone(
            spec.tone_at, n_total, spec.sample_rate, spec.audio_offset, spec.tone_seconds, spec.tone_hz
        )
        chunk = a_stream.codec_context.frame_size or spec.sample_rate // 50  # AAC: 1024, Opus: 20 ms
        events += [(spec.audio_offset + s / spec.sample_rate, "a", s) for s in range(0, n_total, chunk)]
    events.sort(key=lambda e: (e[0], e[1]))
    a_fmt = None
    if a_stream is not None:
        a_fmt = a_stream.codec_context.format.name if a_stream.codec_context.format else "s16"
    offset_samples = round(spec.audio_offset * spec.sample_rate)
    for t, kind, index in events:
        if kind == "v":
            assert v_stream is not None
            frame = av.VideoFrame.from_ndarray(_solid(spec, spec.colour_at(t)), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            tb = v_stream.codec_context.time_base
            frame.pts = round(Fraction(t).limit_denominator(1_000_000) / tb)
            frame.time_base = tb
            for packet in v_stream.encode(frame):
                out.mux(packet)
        else:
            assert a_stream is not None
            piece = samples[index : index + chunk]
            frame = _audio_frame(piece, a_fmt, spec.sample_rate, spec.channels)
            frame.pts = offset_samples + index
            frame.time_base = Fraction(1, spec.sample_rate)
            for packet in a_stream.encode(frame):
                out.mux(packet)
    for stream in (v_stream, a_stream):
        if stream is not None:
            for packet in stream.encode(None):
                out.mux(packet)


def _audio_frame(samples: np.ndarray, fmt: str | None, sample_rate: int, channels: int):
    import av

    # (channels, n): the signal in channel 0, silence in the others.
    planes = np.zeros((channels, samples.shape[0]), dtype=np.float64)
    planes[0] = samples
    packed = fmt is not None and not fmt.endswith("p")  # interleaved formats take (1, n * channels)
    layout = "mono" if channels == 1 else "stereo"
    if fmt in ("s16", "s16p"):
        data = np.clip(np.round(planes * 32767), -32768, 32767).astype(np.int16)
    elif fmt in ("s32", "s32p"):
        data = np.clip(np.round(planes * 2147483647), -(2**31), 2**31 - 1).astype(np.int32)
    else:
        data = planes.astype(np.float32)
        fmt = fmt or "fltp"
    if packed:
        data = data.T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
    frame.sample_rate = sample_rate
    return frame
