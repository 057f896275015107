"""Streaming FAVOR: feed audio-visual media as it arrives, ask questions at any moment (issue 11).

``session = model.stream(processor)`` starts a `StreamingSession`; ``session.feed(frames=..., audio=...)`` encodes
every completed Q-Former window once into the LLM's KV cache; ``session.ask(question)`` answers from the cache and
leaves it as it was. See docs/streaming.md.

One concept per file: `session` (the session), `windows` (media buffers cut into Q-Former windows), `audio_chunks`
(audio encoded chunk by chunk), `context` (the KV cache and the policy when it is full), `spans` (time spans and
answers), `budget` (tokens and memory per hour), `cli` (``favor stream``), `media` (incremental decoding of a file or
pipe).
"""

from typing import TYPE_CHECKING

from ..lazy_exports import lazy_exports

if TYPE_CHECKING:
    from .audio_chunks import ChunkedAudioEncoder
    from .context import ContextPolicy, StreamContext
    from .session import StreamingSession
    from .spans import StreamAnswer, WindowSpan
    from .windows import MediaWindows

# on first use: `favor stream --help` imports `favor_llm.streaming.cli`, which must not pay for torch
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".audio_chunks": ("ChunkedAudioEncoder",),
        ".context": ("ContextPolicy", "StreamContext"),
        ".session": ("StreamingSession",),
        ".spans": ("StreamAnswer", "WindowSpan"),
        ".windows": ("MediaWindows",),
    },
)

__all__ = [
    "ChunkedAudioEncoder",
    "ContextPolicy",
    "MediaWindows",
    "StreamAnswer",
    "StreamContext",
    "StreamingSession",
    "WindowSpan",
]
