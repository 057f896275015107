"""Write a `Scene` as a real media file with PyAV: MP4 with h264 video (yuv420p) and AAC mono audio.

Both streams start at 0 on the clip clock, so `favor_avsync.load_media` decodes them on one clock: frame ``t`` at
2 fps is the picture at ``(t + 0.5) / 2`` s, and the beeps sit where `Scene.waveform` put them (AAC's priming
samples are dropped by the decoder).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from .scene import SLOT, Scene

__all__ = ["SAMPLE_RATE", "VIDEO_FPS", "write_clip"]

#: Source frame rate of the written video: two source frames per 2 fps slot (so the decoder resamples by time,
#: as for real videos, instead of seeing exactly one frame per slot).
VIDEO_FPS = 4
#: Sample rate of the written audio (Whisper's).
SAMPLE_RATE = 16000


def write_clip(scene: Scene, path: str | Path, size: int = 64) -> Path:
    """Encode ``scene`` into ``path`` (MP4: h264 + AAC).

    Args:
        scene: what to show and play.
        path: the file to write (parent folders must exist).
        size: frame width and height in pixels (even).

    Returns:
        ``path`` as a `Path`.
    """
    import av  # lazily: PyAV is favor-avsync's [media] extra

    if size <= 0 or size % 2:
        raise ValueError(f"size: expected a positive even number of pixels, got {size!r}")
    path = Path(path)
    per_slot = round(VIDEO_FPS * SLOT)
    pictures = {name: scene.picture(name, size) for name in set(scene.colours)}
    samples = scene.waveform(SAMPLE_RATE)
    with av.open(str(path), mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=VIDEO_FPS)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        # A key frame per second keeps the files seekable; no B-frames keeps encoding quick for 64x64 clips.
        video.options = {"preset": "veryfast", "g": str(VIDEO_FPS), "bf": "0", "crf": "20"}
        video.codec_context.time_base = Fraction(1, VIDEO_FPS)
        audio = out.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        audio.codec_context.time_base = Fraction(1, SAMPLE_RATE)

        for index in range(scene.num_frames * per_slot):
            picture = pictures[scene.colour_at(index / VIDEO_FPS)]
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)

        chunk = audio.codec_context.frame_size or 1024
        fmt = audio.codec_context.format.name  # fltp for FFmpeg's AAC encoder
        for start in range(0, samples.shape[0], chunk):
            piece = np.ascontiguousarray(samples[None, start : start + chunk], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(piece, format=fmt, layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            frame.time_base = Fraction(1, SAMPLE_RATE)
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    return path
