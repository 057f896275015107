"""`StreamingSession`: answer questions about audio-visual media while it is still arriving.

Each Q-Former window is encoded once, when its last frame and its audio have arrived: its frames (encoded as
they arrive) and its audio chunks (`ChunkedAudioEncoder`) go through the synchroniser, the causal Q-Former and the
language projection (`FavorModel.get_av_features` on frozen features, exactly the offline path), and its AV tokens
are appended to the LLM's KV cache (`StreamContext`). The work per window is constant: nothing earlier is
recomputed. `ask` appends the question (and, like offline, a partial last window), generates, and crops both off.

Exactness (tested): after frames ``[0, T)`` and audio ``[0, S)``, the AV tokens and a greedy answer equal
``model.generate`` on that media offline, when the offline model cuts audio the same way
(``FavorConfig.audio_chunk_seconds`` = the stream's ``chunk_seconds``) and the frame encoder gets the same
instruction (``instruction`` = the offline question, or no instruction for either).

Partial last window: offline, frames past the last full window form a shorter last window (`favor_qformer`'s
window rule: its missing frames are padding). `ask` does the same with the frames and audio received since the
last closed window: it encodes that partial window for this answer only (cost: one window) and drops it after.

Shape legend: ``F`` frames in a call, ``N`` tokens per frame, ``Dv`` visual width, ``Q`` queries, ``E`` LLM width.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from .audio_chunks import ChunkedAudioEncoder, as_waveform
from .context import ContextPolicy, StreamContext
from .spans import StreamAnswer, WindowSpan

__all__ = ["StreamingSession"]


class StreamingSession:
    """A live stream into a `FavorModel` (see the module docstring). Start one with ``model.stream(processor)``.

    Args:
        model: the `FavorModel` (eval mode).
        processor: its `FavorProcessor` (tokenizer, frame processor, feature extractors, layout).
        prompt: the prompt template with ``{media}`` before ``{question}`` (default: the processor's).
        instruction: text for an instruction-aware frame encoder (InstructBLIP's Q-Former); fixed for the stream,
            since frames are encoded before any question (``None``: no instruction).
        video: the stream has frames (a window waits for its frames).
        audio: the stream has audio (a window waits for its audio).
        context_policy: a `ContextPolicy` (or its mode name); default ``"error"``.
        chunk_seconds: seconds of audio encoded at a time (default: ``config.audio_chunk_seconds``, else the
            Q-Former window's stride); must divide the window's stride and size.
        window_times: put each window's start time as text (``window_time_format``) before its AV tokens, so that
            "when" questions can be answered (offline equivalent: `input_ids` with the media).
        window_time_format: the text of a window's start, formatted with ``start`` (seconds).

    Raises:
        ValueError: a template without ``{media}`` before ``{question}``, neither stream, or a chunking that does
            not divide the windows.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        prompt: str | None = None,
        instruction: str | None = None,
        video: bool = True,
        audio: bool = True,
        context_policy: ContextPolicy | str | None = None,
        chunk_seconds: float | None = None,
        window_times: bool = False,
        window_time_format: str = " {start:.0f}s:",
    ) -> None:
        if not (video or audio):
            raise ValueError("video, audio: a stream needs at least one of them")
        config = model.config
        self.model, self.processor = model, processor
        self.video, self.audio = bool(video), bool(audio)
        self.fps = float(config.fps)
        self.sample_rate = int(config.audio_sample_rate)
        self.window_size = int(config.causal_qformer_config.window_size)
        self.window_stride = int(config.causal_qformer_config.window_stride)
        spf = self.sample_rate / self.fps
        if spf != int(spf):
            raise ValueError(
                f"fps: {self.fps} gives {spf} audio samples per frame; streaming needs a whole number"
            )
        self.samples_per_frame = int(spf)
        self.template = prompt if prompt is not None else processor.prompt_template
        self._before, _ = self._split_prompt("")
        tokenizer = processor.tokenizer
        prefix = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
        prefix += tokenizer(self._before, add_special_tokens=False)["input_ids"] if self._before else []
        if isinstance(context_policy, str):
            context_policy = ContextPolicy(mode=context_policy)
        self.context = StreamContext(model, prefix, context_policy or ContextPolicy())
        self.chunk_seconds = float(
            chunk_seconds or config.audio_chunk_seconds or self.window_stride / self.fps
        )
        self.audio_encoder = ChunkedAudioEncoder(model, processor, self.chunk_seconds)
        chunk = self.audio_encoder.chunk_samples
        for name, frames in (("window_stride", self.window_stride), ("window_size", self.window_size)):
            if (frames * self.samples_per_frame) % chunk:
                raise ValueError(
                    f"chunk_seconds: {self.chunk_seconds} s must divide the Q-Former's {name} "
                    f"({frames / self.fps:g} s) so that a window's audio is whole chunks"
                )
        self.window_times = window_times
        self.window_time_format = window_time_format
        self._qformer_ids = self._instruction_ids(instruction)
        # Buffers: frame features from `_frame_base`, encoded audio chunks from `_chunk_base` (per encoder).
        self._frames: list[torch.Tensor] = []  # each (N, Dv)
        self._frame_base = 0
        self._chunks: list[list[torch.Tensor]] = []  # per chunk: one (C, Da) per encoder
        self._chunk_base = 0
        self._pending_audio = np.zeros(0, dtype=np.float32)
        self.frames_seen = 0
        self.samples_seen = 0
        self.windows_closed = 0

    # --------------------------------------------------------------------------------------------- properties
    @property
    def media_seconds(self) -> float:
        """Media received so far (the longer stream; seconds)."""
        return max(
            self.frames_seen / self.fps if self.video else 0.0,
            self.samples_seen / self.sample_rate if self.audio else 0.0,
        )

    @property
    def windows(self) -> list[WindowSpan]:
        """The closed windows in the LLM's context (oldest first)."""
        return [w.span for w in self.context.windows]

    @property
    def num_tokens(self) -> int:
        """Tokens in the KV cache (prompt prefix + windows)."""
        return self.context.length

    def memory(self) -> dict[str, int]:
        """What the stream holds now: ``cache_bytes`` (the KV cache), ``stored_bytes`` (window embeddings kept for
        re-prefill), ``buffered_frames`` / ``buffered_chunks`` (encoded media waiting for a window) and
        ``pending_samples`` (audio waiting for a full chunk). Bounded over any stream length with ``keep_recent``."""
        cache = self.context.cache
        layers = getattr(cache, "layers", [])
        cache_bytes = sum(
            t.numel() * t.element_size()
            for layer in layers
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
            if t is not None
        )
        stored = sum(
            w.embeds.numel() * w.embeds.element_size() for w in self.context.windows if w.embeds is not None
        )
        return {
            "cache_bytes": int(cache_bytes),
            "stored_bytes": int(stored),
            "buffered_frames": len(self._frames),
            "buffered_chunks": len(self._chunks),
            "pending_samples": int(self._pending_audio.shape[0]),
        }

    def input_ids(self) -> torch.Tensor:
        """``(1, L)`` the cached prompt as token ids (AV tokens as the placeholder id): with the media and a question
        suffix, the offline input that gives the same answer (used with ``window_times=True``)."""
        return torch.tensor([self.context.ids()], dtype=torch.long)

    # ------------------------------------------------------------------------------------------------- feeding
    @torch.no_grad()
    def feed(self, frames: Any = None, audio: Any = None) -> list[WindowSpan]:
        """Add media that follows what came before: ``frames`` at ``fps`` (the next frame is at
        ``frames_seen / fps`` s) and ``audio`` samples at the model's sample rate. Closes every window now complete.

        Args:
            frames: ``(F, H, W, 3)`` or ``(F, 3, H, W)`` uint8 frames (numpy or torch).
            audio: ``(S,)`` mono float waveform in [-1, 1] (or int16 PCM).

        Returns:
            the windows closed by this call (now in the cache).
        """
        if frames is not None:
            if not self.video:
                raise ValueError("frames: this stream was started with video=False")
            self._add_frames(frames)
        if audio is not None:
            if not self.audio:
                raise ValueError("audio: this stream was started with audio=False")
            self._add_audio(as_waveform(audio, self.sample_rate))
        closed = []
        while self._can_close(self.windows_closed):
            closed.append(self._close_window())
        return closed

    def _add_frames(self, frames: Any) -> None:
        t = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if t.ndim == 4 and t.shape[1] != 3 and t.shape[-1] == 3:
            t = t.permute(0, 3, 1, 2)
        if t.ndim != 4 or t.shape[1] != 3 or t.dtype != torch.uint8:
            raise ValueError(
                f"frames: expected uint8 (frames, height, width, 3) or (frames, 3, height, width), got "
                f"{t.dtype} {tuple(t.shape)}"
            )
        if t.shape[0] == 0:
            return
        pixels = self.processor.image_processor(images=list(t), return_tensors="pt")["pixel_values"]
        ids, mask = self._qformer_ids
        encoded = self.model.encode_frozen_media(
            pixel_values=pixels[None], qformer_input_ids=ids, qformer_attention_mask=mask
        )
        self._frames.extend(encoded["visual_features"][0].unbind(0))  # F x (N, Dv)
        self.frames_seen += int(t.shape[0])

    def _add_audio(self, waveform: torch.Tensor) -> None:
        self._pending_audio = np.concatenate([self._pending_audio, waveform.numpy()])
        self.samples_seen += int(waveform.shape[0])
        chunk = self.audio_encoder.chunk_samples
        while self._pending_audio.shape[0] >= chunk:
            piece, self._pending_audio = self._pending_audio[:chunk], self._pending_audio[chunk:]
            self._chunks.append(self.audio_encoder.encode(torch.from_numpy(piece.copy())))

    # ------------------------------------------------------------------------------------------------- windows
    def _window_frames(self, index: int) -> tuple[int, int]:
        start = index * self.window_stride
        return start, start + self.window_size

    def _can_close(self, index: int) -> bool:
        _, end = self._window_frames(index)
        video_ready = not self.video or self.frames_seen >= end
        audio_ready = not self.audio or self.samples_seen >= end * self.samples_per_frame
        return video_ready and audio_ready

    def _close_window(self) -> WindowSpan:
        index = self.windows_closed
        start, end = self._window_frames(index)
        embeds, _ = self._encode_span(
            start, end, self.window_size, end * self.samples_per_frame, partial=None
        )
        span = WindowSpan(index, start / self.fps, end / self.fps, 0, embeds.shape[0])
        span = self.context.append(span, self._time_ids(span.start), embeds)
        self.windows_closed += 1
        self._release(self._window_frames(index + 1)[0])
        return span

    def _encode_span(
        self, start: int, end: int, frames: int, sample_end: int, partial: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``[start, start + frames)`` and audio ``[start, sample_end)`` samples -> ``(W * Q, E)`` projected
        AV tokens and the ``(W,)`` window mask (one window unless a partial tail spans more)."""
        model = self.model
        sample_start = start * self.samples_per_frame
        kwargs: dict[str, Any] = {"frame_lengths": [frames if self.video else 0]}
        if self.video and frames:
            offset = start - self._frame_base
            kwargs["visual_features"] = torch.stack(self._frames[offset : offset + frames])[
                None
            ]  # (1, F, N, Dv)
        samples = sample_end - sample_start if self.audio else 0
        kwargs["audio_lengths"] = [samples]
        if samples > 0:
            chunk = self.audio_encoder.chunk_samples
            first = sample_start // chunk - self._chunk_base
            count = math.ceil(samples / chunk)
            pieces = self._chunks[first : first + count]
            if partial is not None:
                pieces = [*pieces, self.audio_encoder.encode(partial)]
            for k in range(len(self.audio_encoder.steps_per_chunk)):
                key = "audio_features" if k == 0 else f"audio_features_{k}"
                kwargs[key] = torch.cat([p[k] for p in pieces])[None]  # (1, steps, Da)
        if "visual_features" not in kwargs and "audio_features" not in kwargs:
            return torch.zeros(0, model.config.text_config.hidden_size), torch.zeros(0, dtype=torch.bool)
        av = model.get_av_features(**kwargs)  # av_embeds (1, W, Q, E), window_mask (1, W)
        projected = av.av_embeds[av.window_mask]  # (W, Q, E)
        return projected.reshape(-1, projected.shape[-1]), av.window_mask[0]

    def _release(self, next_start: int) -> None:
        """Forget frames and audio chunks that no later window reads (memory stays bounded)."""
        drop = max(0, min(next_start, self.frames_seen) - self._frame_base)
        del self._frames[:drop]
        self._frame_base += drop
        chunk = self.audio_encoder.chunk_samples
        drop = max(0, (next_start * self.samples_per_frame) // chunk - self._chunk_base)
        drop = min(drop, len(self._chunks))
        del self._chunks[:drop]
        self._chunk_base += drop

    def _tail(self) -> tuple[torch.Tensor, list[WindowSpan]]:
        """The partial window(s) after the last closed one, as offline would make them (see the module docstring)."""
        layout = self.processor.layout
        total = layout.timeline_frames(
            self.frames_seen if self.video else 0, self.samples_seen if self.audio else 0
        )
        index = self.windows_closed
        closed_end = self._window_frames(index - 1)[1] if index else 0
        if total <= closed_end:
            return torch.zeros(0, self.model.config.text_config.hidden_size), []
        start = self._window_frames(index)[0]
        frames = self.frames_seen - start if self.video else 0
        partial = None
        if self.audio and self._pending_audio.shape[0]:
            partial = torch.from_numpy(self._pending_audio.copy())
        embeds, mask = self._encode_span(start, total, frames, self.samples_seen, partial)
        q = self.model.config.num_queries
        spans = []
        for w in range(int(mask.sum())):
            first = start + w * self.window_stride
            end = min(first + self.window_size, total)
            spans.append(WindowSpan(index + w, first / self.fps, end / self.fps, 0, q, partial=True))
        return embeds, spans

    # ---------------------------------------------------------------------------------------------------- text
    def _split_prompt(self, question: str) -> tuple[str, str]:
        av = self.processor.av_token
        try:
            text = self.template.format(media=av, question=question)
        except (KeyError, IndexError) as error:
            raise ValueError(
                f"prompt: expected a template with {{media}} and {{question}}, got {self.template!r}"
            ) from error
        before, sep, after = text.partition(av)
        if not sep or "{question}" not in self.template.partition("{media}")[2]:
            raise ValueError(
                f"prompt: streaming needs {{media}} before {{question}} in the template (the question comes after the "
                f"cached AV tokens), got {self.template!r}"
            )
        return before, after

    def _time_ids(self, start: float) -> list[int]:
        if not self.window_times:
            return []
        text = self.window_time_format.format(start=start)
        return self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _instruction_ids(self, instruction: str | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        tokenizer = getattr(self.processor, "qformer_tokenizer", None)
        if instruction is None or tokenizer is None:
            return None, None
        enc = tokenizer(
            [instruction],
            padding=True,
            truncation=True,
            max_length=self.processor.qformer_max_length,
            return_tensors="pt",
        )
        return enc["input_ids"], enc["attention_mask"]

    # ------------------------------------------------------------------------------------------------- asking
    @torch.no_grad()
    def ask(
        self,
        question: str,
        max_new_tokens: int = 32,
        include_partial: bool = True,
        attended_windows: int = 0,
        **generate_kwargs: Any,
    ) -> StreamAnswer:
        """Answer ``question`` about the media so far; the stream then continues as if it had not been asked.

        Args:
            question: the question (put into the prompt template's ``{question}``).
            max_new_tokens: the answer's length limit.
            include_partial: encode the frames and audio since the last closed window as a partial window (as the
                offline model does); ``False`` answers from the closed windows only.
            attended_windows: also return the this-many windows the answer's tokens attended to most (one extra
                forward pass with eager attention over the answer).
            **generate_kwargs: passed to `FavorModel.generate` (greedy unless ``do_sample=True``).

        Returns:
            a `StreamAnswer` (text, token ids, the time span covered, the windows, latency).

        Raises:
            ValueError: an empty question, or (context policy ``"error"``) a question that does not fit.
        """
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question: expected a non-empty string, got {question!r}")
        started = time.perf_counter()
        before, after = self._split_prompt(question)
        if before != self._before:
            raise ValueError(
                f"question: changes the prompt text before {{media}} ({before!r}); check the template"
            )
        suffix = self.processor.tokenizer(after, add_special_tokens=False)["input_ids"]
        tail, tail_spans = self._tail() if include_partial else (None, [])
        tail_count = 0 if tail is None else tail.shape[0]
        self.context.check_room(tail_count + len(suffix) + max_new_tokens, f"question {question!r}")
        base = self.context.length
        av_id = self.model.config.av_token_id
        ids = self.context.ids() + [av_id] * tail_count + suffix
        spans = self.windows
        if tail_count:
            spans += [
                WindowSpan(s.index, s.start, s.end, base + i * s.num_tokens, s.num_tokens, True)
                for i, s in enumerate(tail_spans)
            ]
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        generate_kwargs.setdefault("do_sample", False)
        try:
            if tail_count:
                self.context.extend(tail)
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                cache=self.context.cache,
                max_new_tokens=max_new_tokens,
                **generate_kwargs,
            )
            answer = out[0, input_ids.shape[1] :]
            attended = (
                self._attended(input_ids, answer, spans, attended_windows) if attended_windows else None
            )
        finally:
            self.context.crop(base)
        span = (spans[0].start, spans[-1].end) if spans else (self.media_seconds, self.media_seconds)
        return StreamAnswer(
            text=self.processor.decode(answer, skip_special_tokens=True),
            token_ids=answer.tolist(),
            media_seconds=self.media_seconds,
            span=span,
            windows=spans,
            attended=attended,
            latency=time.perf_counter() - started,
        )

    def _attended(
        self, input_ids: torch.Tensor, answer: torch.Tensor, spans: list[WindowSpan], top: int
    ) -> list[tuple[int, float]]:
        """Mean attention of the answer tokens on each window's AV tokens (eager attention, one extra pass)."""
        lm = self.model.causal_lm
        previous = lm.config._attn_implementation
        self.context.crop(input_ids.shape[1])
        lm.set_attn_implementation("eager")
        try:
            total = input_ids.shape[1] + answer.shape[0]
            out = lm(
                input_ids=answer[None],
                attention_mask=torch.ones(1, total, dtype=torch.long, device=answer.device),
                position_ids=torch.arange(input_ids.shape[1], total, device=answer.device)[None],
                cache=self.context.cache,
                use_cache=True,
                output_attentions=True,
                logits_to_keep=1,
            )
        finally:
            lm.set_attn_implementation(previous)
        weights = torch.stack([a[0].float() for a in out.attentions]).mean(dim=(0, 1, 2))  # (total,) keys
        shares = [(s.index, float(weights[s.position : s.position + s.num_tokens].sum())) for s in spans]
        norm = sum(v for _, v in shares) or 1.0
        ranked = sorted(((i, v / norm) for i, v in shares), key=lambda item: -item[1])
        return ranked[:top]
