"""How many AV tokens a media item becomes: the contract between `FavorProcessor` and `FavorModel`.

The processor expands the prompt's single AV placeholder into exactly as many placeholder tokens as the model
later produces, and the model checks the counts match. Both sides compute them with `AVLayout`:

``frames = max(visual frames, frames the audio needs)`` (the synchroniser's ``timeline="longest"``, released),
``windows = 1 + ceil((frames - window_size) / window_stride)`` (one window for ``frames <= window_size``),
``tokens = windows * num_queries`` (twice that with ``av_fusion="separate"``: a video block and an audio block).

Released settings (2 fps, windows of 10 frames, 32 queries): 12 windows per minute, 384 AV tokens per minute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .audio import audio_steps
from .configuration import AV_FUSIONS, FavorConfig, token_blocks

__all__ = ["AVLayout", "av_tokens_per_minute", "num_windows"]


def num_windows(num_frames: int, window_size: int, window_stride: int) -> int:
    """Windows the causal Q-Former makes of ``num_frames`` frames (0 frames: 0 windows); `favor_qformer`'s rule."""
    from favor_qformer import count_windows

    return count_windows(int(num_frames), int(window_size), int(window_stride))


@dataclass
class AVLayout:
    """The settings that decide how many frames, windows and AV tokens a media item gives (released defaults)."""

    fps: float = 2.0
    audio_feature_rates: list[float] = field(default_factory=lambda: [50.0])
    tokens_per_frame: int = 32
    sync_mode: str = "time"
    sync_overflow: str = "error"
    window_size: int = 10
    window_stride: int = 10
    num_queries: int = 32
    sample_rate: int = 16000
    repeat_image: int = 60
    max_media_seconds: float | None = 300.0
    #: `FavorConfig.audio_chunk_seconds`: the processor cuts waveforms into chunks this long (None: the window).
    audio_chunk_seconds: float | None = None
    #: `FavorConfig.av_fusion`: ``"separate"`` doubles the tokens (video windows, then audio windows).
    av_fusion: str = "synchronised"

    def __post_init__(self) -> None:
        # a misspelt value in a hand-edited processor_config.json would otherwise count one block per item
        if self.av_fusion not in AV_FUSIONS:
            raise ValueError(f"layout.av_fusion: expected one of {list(AV_FUSIONS)}, got {self.av_fusion!r}")

    @classmethod
    def from_config(cls, config: FavorConfig) -> AVLayout:
        q = config.causal_qformer_config
        return cls(
            fps=float(config.fps),
            audio_feature_rates=[float(r) for r in config.audio_feature_rates],
            tokens_per_frame=config.tokens_per_frame,
            sync_mode=config.sync_mode,
            sync_overflow=config.sync_overflow,
            window_size=int(q.window_size),
            window_stride=int(q.window_stride),
            num_queries=config.num_queries,
            sample_rate=int(config.audio_sample_rate),
            repeat_image=int(config.repeat_image),
            max_media_seconds=config.max_media_seconds,
            audio_chunk_seconds=config.audio_chunk_seconds,
            av_fusion=config.av_fusion,
        )

    @classmethod
    def from_dict(cls, data: dict) -> AVLayout:
        """From `to_dict`'s fields (``image_repeat``, the name before ``repeat_image``, is read too)."""
        data = dict(data)
        if "image_repeat" in data:
            data.setdefault("repeat_image", data.pop("image_repeat"))
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    def synchroniser(self):
        """The `favor_avsync.TemporalSynchroniser` these settings describe."""
        from favor_avsync import TemporalSynchroniser

        return TemporalSynchroniser(
            fps=self.fps,
            audio_rates=tuple(self.audio_feature_rates),
            tokens_per_frame=self.tokens_per_frame,
            mode=self.sync_mode,
            overflow=self.sync_overflow,
            repeat_image=self.repeat_image,
        )

    def audio_frames(self, audio_samples: int) -> int:
        """Frames the audio needs (the frame of its last encoder step's centre + 1, over all audio streams)."""
        sync = self.synchroniser()
        frames = 0
        for stream, rate in enumerate(self.audio_feature_rates):
            steps = int(audio_steps(int(audio_samples), rate, self.sample_rate))
            frames = max(frames, sync.num_frames(steps, stream=stream))
        return frames

    def timeline_frames(self, visual_frames: int, audio_samples: int) -> int:
        """Frames of a sample after synchronisation: the longer of its visual frames and its audio's frames."""
        return max(int(visual_frames), self.audio_frames(audio_samples))

    def av_tokens(self, visual_frames: int, audio_samples: int) -> int:
        """AV tokens (placeholder copies) for one media item."""
        frames = self.timeline_frames(visual_frames, audio_samples)
        return num_windows(frames, self.window_size, self.window_stride) * self.num_queries * self.av_blocks

    @property
    def av_blocks(self) -> int:
        """Token blocks per media item (`FavorConfig.av_blocks`): 2 with ``av_fusion="separate"``, else 1."""
        return token_blocks(self.av_fusion)

    def tokens_per_minute(self) -> float:
        """AV tokens per minute of video (released: 120 frames -> 12 windows x 32 queries = 384)."""
        return 60.0 * self.fps / self.window_stride * self.num_queries * self.av_blocks


def av_tokens_per_minute(config: FavorConfig | None = None) -> float:
    """AV tokens per minute of video for ``config`` (default: the released FAVOR, 384)."""
    return AVLayout.from_config(config or FavorConfig()).tokens_per_minute()
