"""Streaming (favor_llm.streaming): a stream's AV tokens, KV cache and greedy answers equal offline inference on the
media received so far; the context policy; errors. The tiny model cuts audio in 2 s chunks (one Q-Former window of
4 frames at 2 fps), offline and streaming alike (`FavorConfig.audio_chunk_seconds`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from favor_llm.streaming import ContextPolicy, StreamingSession
from favor_llm.testing import tiny_model_and_processor

QUESTION = "What is happening in the video?"
SPF = 8000  # audio samples per frame (16 kHz / 2 fps)


@pytest.fixture(scope="module")
def chunked():
    return tiny_model_and_processor(seed=0, audio_chunk_seconds=2.0)


@pytest.fixture(scope="module")
def av():
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (14, 32, 32, 3), dtype=np.uint8)
    audio = (rng.standard_normal(14 * SPF) * 0.1).astype(np.float32)
    return frames, audio


def offline_answer(model, processor, media, question=QUESTION, max_new_tokens=6):
    inputs = processor(text=question, media=media)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist(), inputs


def feed_in_pieces(session, frames, audio, frame_step=3, audio_step=5000):
    """Frames and audio in unequal, unaligned pieces (video a little ahead of audio)."""
    f = a = 0
    while f < len(frames) or a < len(audio):
        if f < len(frames):
            session.feed(frames=frames[f : f + frame_step])
            f += frame_step
        if a < len(audio):
            session.feed(audio=audio[a : a + audio_step])
            a += audio_step


@pytest.mark.parametrize(
    ("frames_in", "samples_in"),
    [(8, 8 * SPF), (9, 9 * SPF), (12, 11 * SPF + 1234), (5, 0), (0, 7 * SPF)],
    ids=["2-windows", "partial-last-window", "audio-behind-video", "video-only", "audio-only"],
)
def test_answer_equals_offline_generate(chunked, av, frames_in, samples_in):
    """The greedy answer after any amount of media equals offline generation on that media (a partial last window
    included as offline does), also when audio lags video or one stream is absent."""
    model, processor = chunked
    frames, audio = av
    session = model.stream(processor, instruction=QUESTION, video=frames_in > 0, audio=samples_in > 0)
    feed_in_pieces(session, frames[:frames_in], audio[:samples_in])
    media = {}
    if frames_in:
        media["video"] = frames[:frames_in]
    if samples_in:
        media["audio"] = audio[:samples_in]
    expected, inputs = offline_answer(model, processor, media)
    answer = session.ask(QUESTION, max_new_tokens=6)
    assert answer.token_ids == expected
    # the AV tokens in context (closed + partial windows) are as many as offline's placeholders
    av_id = model.config.av_token_id
    assert sum(w.num_tokens for w in answer.windows) == int((inputs["input_ids"] == av_id).sum())
    # the stream continues unchanged: the cache holds the prefix and the closed windows only
    assert session.num_tokens == session.input_ids().shape[1]
    assert session.ask(QUESTION, max_new_tokens=6).token_ids == expected


def test_cache_and_av_tokens_equal_offline(chunked, av):
    """After N closed windows the KV cache equals an offline prefill of the same prompt with the first N windows'
    media, and the stored AV embeddings equal the offline projected Q-Former tokens."""
    model, processor = chunked
    frames, audio = av
    n = 3
    session = model.stream(
        processor, instruction=QUESTION, context_policy=ContextPolicy("keep_recent", max_tokens=4096)
    )
    feed_in_pieces(session, frames[: 4 * n], audio[: 4 * n * SPF], frame_step=5, audio_step=7000)
    assert session.windows_closed == n
    inputs = processor(text=QUESTION, media={"video": frames[: 4 * n], "audio": audio[: 4 * n * SPF]})
    av = model.get_av_features(
        **{k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    )
    projected = av.av_embeds[av.window_mask].reshape(-1, model.config.text_config.hidden_size)
    streamed = torch.cat([w.embeds for w in session.context.windows])
    torch.testing.assert_close(streamed, projected, rtol=1e-5, atol=1e-6)
    ids = session.input_ids()
    assert (
        ids.tolist()[0] == inputs["input_ids"][0, : ids.shape[1]].tolist()
    )  # prefix | AV: the offline prompt's start
    with torch.no_grad():
        out = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            use_cache=True,
            **{k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")},
        )
    for layer_stream, layer_offline in zip(session.context.cache.layers, out.cache.layers):
        torch.testing.assert_close(layer_stream.keys, layer_offline.keys, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer_stream.values, layer_offline.values, rtol=1e-4, atol=1e-5)
    assert [(w.start, w.end) for w in session.windows] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]


def test_overlapping_windows_equal_offline(av):
    """Windows of 4 frames every 2 frames (stride < size): audio chunks shared by two windows are encoded once."""
    qformer = {
        "window_size": 4,
        "window_stride": 2,
        "num_queries": 4,
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 64,
        "causal_num_heads": 4,
        "max_position_embeddings": 128,
    }
    model, processor = tiny_model_and_processor(
        seed=1, audio_chunk_seconds=1.0, causal_qformer_config=qformer
    )
    frames, audio = av
    session = model.stream(processor)
    feed_in_pieces(session, frames[:11], audio[: 11 * SPF])
    assert session.windows_closed == 4  # windows at frames 0, 2, 4, 6 are complete; 8-11 is partial
    expected, _ = offline_answer(model, processor, {"video": frames[:11], "audio": audio[: 11 * SPF]})
    qformer_free = processor.qformer_tokenizer is not None  # offline gets the question as instruction
    session = model.stream(processor, instruction=QUESTION if qformer_free else None)
    feed_in_pieces(session, frames[:11], audio[: 11 * SPF])
    assert session.ask(QUESTION, max_new_tokens=6).token_ids == expected


@pytest.mark.parametrize("frames_in", [8, 10], ids=["closed-windows", "with-partial-window"])
def test_window_times_as_text_equal_offline_input_ids(chunked, av, frames_in):
    """With window start times as text, `input_ids()` (+ a partial window with its time) + the question, with the
    media, is the offline input."""
    model, processor = chunked
    frames, audio = av
    session = model.stream(processor, instruction=QUESTION, window_times=True)
    session.feed(frames=frames[:frames_in], audio=audio[: frames_in * SPF])
    ids = session.input_ids()
    times = processor.tokenizer(" 2s:", add_special_tokens=False)["input_ids"]
    assert ids[0, -(4 + len(times)) : -4].tolist() == times
    answer = session.ask(QUESTION, max_new_tokens=6)
    inputs = processor(text=QUESTION, media={"video": frames[:frames_in], "audio": audio[: frames_in * SPF]})
    partial = []
    if frames_in % 4:
        partial = (
            processor.tokenizer(" 4s:", add_special_tokens=False)["input_ids"]
            + [model.config.av_token_id] * 4
        )
        assert answer.windows[-1].partial and answer.windows[-1].position == ids.shape[1] + len(partial) - 4
    suffix = processor.tokenizer("</Img> " + QUESTION + "\nASSISTANT:", add_special_tokens=False)["input_ids"]
    full = torch.cat([ids, torch.tensor([partial + suffix])], dim=1)
    media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    out = model.generate(
        input_ids=full, attention_mask=torch.ones_like(full), **media, max_new_tokens=6, do_sample=False
    )
    assert answer.token_ids == out[0, full.shape[1] :].tolist()


def test_answer_spans_and_attended_windows(chunked, av):
    model, processor = chunked
    frames, audio = av
    session = model.stream(processor)
    session.feed(frames=frames[:10], audio=audio[: 10 * SPF])
    answer = session.ask(QUESTION, max_new_tokens=4, attended_windows=2)
    assert answer.span == (0.0, 5.0)
    assert answer.media_seconds == 5.0
    assert [w.partial for w in answer.windows] == [False, False, True]
    assert len(answer.attended) == 2
    indices = {w.index for w in answer.windows}
    assert all(i in indices and 0.0 <= share <= 1.0 for i, share in answer.attended)
    assert answer.attended[0][1] >= answer.attended[1][1]
    closed_only = session.ask(QUESTION, max_new_tokens=4, include_partial=False)
    assert closed_only.span == (0.0, 4.0)


def test_attended_windows_restore_the_attention_implementation_even_after_an_error(chunked, av, monkeypatch):
    """The attention pass switches the LLM to eager attention; its own implementation (sdpa here) comes back after
    the pass and after a pass that raises, and the session answers as before."""
    model, processor = chunked
    lm = model.causal_lm
    before = lm.config._attn_implementation  # transformers has no public getter (see eager_attention)
    assert before == "sdpa"
    frames, audio = av
    session = model.stream(processor)
    session.feed(frames=frames[:8], audio=audio[: 8 * SPF])
    first = session.ask(QUESTION, max_new_tokens=3, attended_windows=1)
    assert lm.config._attn_implementation == before
    forward = lm.forward

    def failing(*args, **kwargs):
        if kwargs.get("output_attentions"):
            raise RuntimeError("out of memory in the attention pass")
        return forward(*args, **kwargs)

    monkeypatch.setattr(lm, "forward", failing)
    with pytest.raises(RuntimeError, match="attention pass"):
        session.ask(QUESTION, max_new_tokens=3, attended_windows=1)
    assert lm.config._attn_implementation == before
    assert {m.config._attn_implementation for m in lm.modules() if hasattr(m, "config")} == {before}
    monkeypatch.undo()
    again = session.ask(QUESTION, max_new_tokens=3, attended_windows=1)
    assert (again.token_ids, again.attended) == (first.token_ids, first.attended)


def test_context_error_policy_names_the_limit(chunked, av):
    model, processor = chunked
    frames, audio = av
    session = model.stream(processor, context_policy=ContextPolicy(max_tokens=25, reserve_tokens=10))
    session.feed(frames=frames[:8], audio=audio[: 8 * SPF])  # 7 prefix + 8 AV tokens + 10 reserved = 25
    with pytest.raises(ValueError, match="context is 25 tokens"):
        session.feed(frames=frames[8:12], audio=audio[8 * SPF : 12 * SPF])
    # the window that did not fit stays pending (not lost, not half-appended): the cache is unchanged
    assert session.windows_closed == 2 and session.num_tokens == 15
    assert session.memory()["buffered_frames"] == 4 and session.memory()["buffered_chunks"] == 1
    with pytest.raises(ValueError, match="context is 25 tokens"):
        session.ask(QUESTION, max_new_tokens=20)


def test_keep_recent_drops_oldest_windows_and_stays_exact(chunked, av):
    """keep_recent drops the oldest windows and re-prefills: the cache then equals a fresh stream's cache over the
    kept windows only (same AV embeddings, positions renumbered), and never exceeds the limit."""
    model, processor = chunked
    frames, audio = av
    policy = ContextPolicy("keep_recent", max_tokens=35, reserve_tokens=20, keep_fraction=0.5)
    session = model.stream(processor, context_policy=policy)
    for i in range(0, 14, 2):
        session.feed(frames=frames[i : i + 2], audio=audio[i * SPF : (i + 2) * SPF])
        assert session.num_tokens + policy.reserve_tokens <= policy.max_tokens
    assert session.context.dropped_windows > 0 and session.context.reprefills > 0
    kept = session.windows
    assert kept[-1].index == 2 and kept[0].index > 0  # 3 closed windows (12 frames), the oldest dropped
    assert kept[0].position == 7  # renumbered right after the prefix
    answer = session.ask(QUESTION, max_new_tokens=4)  # may drop more windows to fit the question
    kept = session.windows
    assert answer.windows[: len(kept)] == kept and answer.windows[-1].partial
    assert answer.span == (kept[0].start if kept else 6.0, 7.0)
    assert session.num_tokens == 7 + 4 * len(kept)


def test_bad_input_is_a_clear_error(chunked):
    model, processor = chunked
    session = model.stream(processor)
    with pytest.raises(ValueError, match="frames: expected uint8"):
        session.feed(frames=np.zeros((2, 32, 32, 3), dtype=np.float32))
    frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"frame_times: .* must be at \[0.0, 0.5\] s; got \[0.0, 1.0\]"):
        session.feed(frames=frames, frame_times=[0.0, 1.0])
    assert session.feed(frames=frames, frame_times=[0.0, 0.5]) == [] and session.frames_seen == 2
    with pytest.raises(ValueError, match="audio: holds NaN"):
        session.feed(audio=np.full(100, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="audio: expected a mono waveform"):
        session.feed(audio=np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="question: expected a non-empty string"):
        session.ask("  ")
    with pytest.raises(ValueError, match="prompt: streaming needs"):
        StreamingSession(model, processor, prompt="{question} <Img>{media}</Img>")
    with pytest.raises(ValueError, match=r"chunk_seconds: 1.5 s must divide"):
        StreamingSession(model, processor, chunk_seconds=1.5)
    with pytest.raises(ValueError, match="audio: this stream was started with audio=False"):
        StreamingSession(model, processor, audio=False).feed(audio=np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="context_policy: mode"):
        ContextPolicy("drop_everything")
    with pytest.raises(ValueError, match="audio_chunk_seconds"):
        tiny_model_and_processor(audio_chunk_seconds=0.013)


def test_stream_budget_released_and_favor_info(capsys):
    """Released FAVOR: 384 AV tokens per minute, Vicuna-13B's KV cache is 2 x 40 layers x 40 heads x 128 x 2 bytes
    per token, its 2048-token context holds (2048 - 256) / 384 minutes; `favor info` prints it."""
    from favor_llm import FavorConfig
    from favor_llm.cli import main
    from favor_llm.streaming.budget import stream_budget

    budget = stream_budget(FavorConfig())
    assert budget["av_tokens_per_hour"] == 23040
    assert budget["kv_bytes_per_token"] == 2 * 40 * 40 * 128 * 2
    assert budget["kv_bytes_per_hour"] == 23040 * 819200
    assert budget["minutes_until_full"] == pytest.approx((2048 - 256) / 384)
    assert main(["info", "released"]) == 0
    out = capsys.readouterr().out
    assert "23,040 AV tokens and 17.58 GiB of 16-bit KV cache per hour" in out
    assert "context is full after 4.7 min" in out


def test_audio_chunk_seconds_is_saved_and_changes_offline_audio(chunked, av, tmp_path):
    """FavorConfig.audio_chunk_seconds and the processor's layout survive save/load, and offline inference really
    cuts audio into such chunks (two 2 s chunks for 4 s of audio, one 5 s window without; different features)."""
    from favor_llm import FavorConfig, FavorProcessor

    model, processor = chunked
    model.config.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert FavorConfig.from_pretrained(tmp_path).audio_chunk_seconds == 2.0
    assert FavorProcessor.from_pretrained(tmp_path).layout.audio_chunk_seconds == 2.0
    plain, plain_processor = tiny_model_and_processor(seed=0)
    _, audio = av
    chunked_in = processor(text=QUESTION, media={"audio": audio[: 8 * SPF]})  # 4 s
    plain_in = plain_processor(text=QUESTION, media={"audio": audio[: 8 * SPF]})
    assert chunked_in["input_features"].shape[1] == 1 + 1 and plain_in["input_features"].shape[1] == 1
    a = model.encode_frozen_media(input_features=chunked_in["input_features"], audio_lengths=[8 * SPF])
    b = plain.encode_frozen_media(input_features=plain_in["input_features"], audio_lengths=[8 * SPF])
    assert a["audio_features"].shape == b["audio_features"].shape == (1, 200, 32)  # 50 Hz x 4 s either way
    # same weights (seed 0), different chunking: the encoder saw different windows
    assert not torch.allclose(a["audio_features"], b["audio_features"], atol=1e-3)
    # each chunk alone is what a stream encodes
    first = model.stream(processor).media.audio_encoder.encode(torch.from_numpy(audio[: 4 * SPF]))[0]
    torch.testing.assert_close(a["audio_features"][0, :100], first, rtol=1e-5, atol=1e-6)


def test_control_token_text_in_a_streamed_question_stays_text_as_offline(chunked, av, monkeypatch):
    """`ask` tokenised the question with control tokens live ("</s>" an end-of-sequence token) while the processor
    keeps them as text: the streamed answer must equal offline generation for such a question too."""
    model, processor = chunked
    frames, audio = av
    question = "what does </s> mean here?"
    session = model.stream(processor, instruction=question)
    feed_in_pieces(session, frames, audio)
    expected, _ = offline_answer(model, processor, {"video": frames, "audio": audio}, question=question)
    seen = []
    tokenizer_class = type(processor.tokenizer)
    original = tokenizer_class.__call__

    def spy(self, text=None, *args, **kwargs):
        seen.append((text, kwargs.get("split_special_tokens", False)))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(tokenizer_class, "__call__", spy)
    answer = session.ask(question, max_new_tokens=6)
    assert answer.token_ids == expected
    assert any(isinstance(text, str) and "</s>" in text and escaped for text, escaped in seen)
    with pytest.raises(ValueError, match="question: contains the AV placeholder"):
        session.ask("what is <AV>?")


@pytest.mark.parametrize("count", [-1, 1.5, True])
def test_attended_windows_must_be_a_count(chunked, count):
    # -1 used to return no windows at all, as if the answer had attended to nothing
    model, processor = chunked
    session = model.stream(processor)
    with pytest.raises(ValueError, match=r"attended_windows: expected an int >= 0"):
        session.ask("What colour?", max_new_tokens=1, attended_windows=count)
