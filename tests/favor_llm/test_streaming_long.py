"""Long streams (favor_llm.streaming): with the keep_recent policy memory stays bounded however long the media; an
hour of synthetic media runs in ``nox -s tests_slow``. Frames and audio are cheap arrays (no decoding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from favor_llm.streaming import ContextPolicy
from favor_llm.testing import tiny_model_and_processor

SPF = 8000  # audio samples per frame (16 kHz / 2 fps)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def stream_minutes(minutes: int, max_tokens: int):
    """Stream ``minutes`` of media in 1 s pieces; returns the session and its memory after every minute."""
    model, processor = tiny_model_and_processor(seed=0, audio_chunk_seconds=2.0)
    policy = ContextPolicy("keep_recent", max_tokens=max_tokens, reserve_tokens=64)
    session = model.stream(processor, context_policy=policy)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)  # 1 s of video, reused
    audio = (rng.standard_normal(2 * SPF) * 0.1).astype(np.float32)
    trace = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend on a shared CPU
    try:
        for minute in range(minutes):
            for _ in range(60):
                session.feed(frames=frames, audio=audio)
            point = {
                **session.memory(),
                "tokens": session.num_tokens,
                "rss": _rss_bytes(),
                "minute": minute + 1,
            }
            trace.append(point)
    finally:
        torch.set_num_threads(threads)
    return session, trace


def _check_bounded(session, trace, max_tokens):
    assert session.windows_closed == trace[-1]["minute"] * 30  # every 2 s window closed, none lost
    assert session.context.dropped_windows > 0
    for point in trace:
        assert point["tokens"] + 64 <= max_tokens  # reserve_tokens stay free
        assert (
            point["buffered_frames"] <= 4 and point["buffered_chunks"] <= 1 and point["pending_samples"] == 0
        )
    assert max(p["cache_bytes"] for p in trace) <= 2 * trace[0]["cache_bytes"]
    assert max(p["stored_bytes"] for p in trace) <= 2 * trace[0]["stored_bytes"]
    answer = session.ask("What is happening in the video?", max_new_tokens=4)
    assert answer.span[1] == trace[-1]["minute"] * 60.0
    assert answer.span[0] > 0  # the oldest windows were dropped, and the answer says what it covers


def test_long_stream_memory_bounded():
    """Two minutes (60 windows, 4x the room for AV tokens) with keep_recent: the cache, stored embeddings and
    buffers stay bounded and the answer reports the span it covers."""
    session, trace = stream_minutes(2, max_tokens=128)
    _check_bounded(session, trace, 128)


@pytest.mark.slow
def test_hour_stream_memory_bounded():
    """An hour of synthetic media (1800 windows) through the tiny model: bounded cache, buffers and process memory."""
    session, trace = stream_minutes(60, max_tokens=256)
    _check_bounded(session, trace, 256)
    growth = trace[-1]["rss"] - trace[9]["rss"]
    assert growth < 64 * 2**20, f"process memory grew {growth / 2**20:.1f} MiB from minute 10 to 60"
