"""What a stream knows about time: the span of every window in its context, and what `ask` returns.

Every AV token belongs to one Q-Former window, and a window covers frames ``[start, start + window_size)`` of the
stream's clock (frame ``t`` covers ``[t / fps, (t + 1) / fps)``; `favor_avsync`'s time rule), so its span in
seconds is ``[start / fps, (start + window_size) / fps)`` (cut at the media received for a partial last window).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["StreamAnswer", "WindowSpan"]


@dataclass(frozen=True)
class WindowSpan:
    """One Q-Former window in the LLM's context.

    Attributes:
        index: the window's number in the stream (0 = the first window ever; kept when older windows are dropped).
        start: its first second of media.
        end: its last second of media (exclusive).
        position: the LLM position of its first AV token.
        num_tokens: its AV tokens (``num_queries``).
        partial: a window still open when the question came (encoded for this answer only).
    """

    index: int
    start: float
    end: float
    position: int
    num_tokens: int
    partial: bool = False


@dataclass
class StreamAnswer:
    """The result of `StreamingSession.ask`.

    Attributes:
        text: the decoded answer.
        token_ids: the generated token ids (without the prompt).
        media_seconds: media received when the question was asked (the stream's clock).
        span: ``(start, end)`` seconds of media that the LLM's context covered for this answer.
        windows: the windows in the context for this answer (oldest first; the partial one last).
        attended: ``[(window index, share of attention), ...]``, most attended first, when requested
            (``ask(..., attended_windows=k)``); the share is the answer tokens' mean attention weight on a window's AV
            tokens (all heads and layers), over the total on AV tokens.
        latency: seconds from the call to the answer (tail window + question + generation).
    """

    text: str
    token_ids: list[int]
    media_seconds: float
    span: tuple[float, float]
    windows: list[WindowSpan] = field(default_factory=list)
    attended: list[tuple[int, float]] | None = None
    latency: float = 0.0
