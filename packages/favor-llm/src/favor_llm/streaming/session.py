"""`StreamingSession`: answer questions about audio-visual media while it is still arriving.

Each Q-Former window is encoded once, when its last frame and its audio have arrived (`MediaWindows`: frames
encoded as they arrive, audio chunk by chunk, then `FavorModel.get_av_features` on the frozen features, exactly the
offline path), and its AV tokens are appended to the LLM's KV cache (`StreamContext`). The work per window is
constant: nothing earlier is recomputed. `ask` appends the question (and, like offline, a partial last window),
generates, and crops both off.

Exactness (tested): after frames ``[0, T)`` and audio ``[0, S)``, the AV tokens and a greedy answer equal
``model.generate`` on that media offline, when the offline model cuts audio the same way
(``FavorConfig.audio_chunk_seconds`` = the stream's ``chunk_seconds``) and the frame encoder gets the same
instruction (``instruction`` = the offline question, or no instruction for either).

Partial last window: offline, frames past the last full window form a shorter last window (`favor_qformer`'s
window rule: its missing frames are padding). `ask` does the same with the frames and audio received since the
last closed window: it encodes that partial window for this answer only (cost: one window) and drops it after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..prompts import checked_questions
from .context import ContextPolicy, StreamContext
from .spans import StreamAnswer, WindowSpan
from .windows import MediaWindows

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
        if config.av_fusion != "synchronised":
            # Separate Q-Formers put all video windows before all audio windows, which a live stream cannot do.
            raise ValueError(
                f"model: streaming needs av_fusion='synchronised' (one token block per window); this model has "
                f"av_fusion={config.av_fusion!r} (the no-synchronisation ablation), use offline generate"
            )
        self.model, self.processor = model, processor
        self.template = prompt if prompt is not None else processor.prompt_template
        self._before, _ = self._split_prompt("")
        tokenizer = processor.tokenizer
        prefix = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
        prefix += tokenizer(self._before, add_special_tokens=False)["input_ids"] if self._before else []
        stride_seconds = config.causal_qformer_config.window_stride / float(config.fps)
        self.chunk_seconds = float(chunk_seconds or config.audio_chunk_seconds or stride_seconds)
        self.media = MediaWindows(model, processor, video, audio, self.chunk_seconds, instruction)
        if isinstance(context_policy, str):
            context_policy = ContextPolicy(mode=context_policy)
        self.context = StreamContext(model, prefix, context_policy or ContextPolicy())
        self.window_times = window_times
        self.window_time_format = window_time_format

    # --------------------------------------------------------------------------------------------- properties
    @property
    def video(self) -> bool:
        """The stream has frames."""
        return self.media.video

    @property
    def audio(self) -> bool:
        """The stream has audio."""
        return self.media.audio

    @property
    def media_seconds(self) -> float:
        """Media received so far (the longer stream; seconds)."""
        return self.media.media_seconds

    @property
    def frames_seen(self) -> int:
        """Frames received so far."""
        return self.media.frames_seen

    @property
    def windows_closed(self) -> int:
        """Windows closed (encoded into the cache, or dropped since by ``keep_recent``) so far."""
        return self.media.closed

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
        layers = getattr(self.context.cache, "layers", [])
        cache_bytes = sum(
            t.numel() * t.element_size()
            for layer in layers
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
            if t is not None
        )
        stored = sum(
            w.embeds.numel() * w.embeds.element_size() for w in self.context.windows if w.embeds is not None
        )
        return {"cache_bytes": int(cache_bytes), "stored_bytes": int(stored), **self.media.memory()}

    def input_ids(self) -> torch.Tensor:
        """``(1, L)`` the cached prompt as token ids (AV tokens as the placeholder id): with the media and a question
        suffix, the offline input that gives the same answer (used with ``window_times=True``)."""
        return torch.tensor([self.context.ids()], dtype=torch.long)

    # ------------------------------------------------------------------------------------------------- feeding
    @torch.no_grad()
    def feed(self, frames: Any = None, audio: Any = None, frame_times: Any = None) -> list[WindowSpan]:
        """Add media that follows what came before: ``frames`` at ``fps`` (the next frame is at
        ``frames_seen / fps`` s) and ``audio`` samples at the model's sample rate. Closes every window now complete.

        Args:
            frames: ``(F, H, W, 3)`` or ``(F, 3, H, W)`` uint8 frames (numpy or torch).
            audio: ``(S,)`` mono float waveform in [-1, 1] (or int16 PCM).
            frame_times: ``(F,)`` seconds of the frames on the stream's clock, checked against ``fps`` (frame ``t``
                is at ``t / fps``; within half a frame): frames at another rate or with gaps must be resampled
                first (e.g. by `favor_avsync.load_media`, or `favor_llm.streaming.media.pipe_pieces`).

        Returns:
            the windows closed by this call (now in the cache).

        Raises:
            ValueError: bad frames or audio, a stream the session was started without, or (context policy
                ``"error"``) a window that does not fit (it stays pending: the next call retries it).
        """
        if frames is not None:
            if not self.video:
                raise ValueError("frames: this stream was started with video=False")
            self.media.add_frames(frames, frame_times)
        if audio is not None:
            if not self.audio:
                raise ValueError("audio: this stream was started with audio=False")
            self.media.add_audio(audio)
        closed = []
        for span, embeds in self.media.complete():
            closed.append(self.context.append(span, self._time_ids(span.start), embeds))
        return closed

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
        if (
            isinstance(attended_windows, bool)
            or not isinstance(attended_windows, int)
            or attended_windows < 0
        ):
            raise ValueError(f"attended_windows: expected an int >= 0, got {attended_windows!r}")
        started = time.perf_counter()
        before, after = self._split_prompt(question)
        if before != self._before:
            raise ValueError(
                f"question: changes the prompt text before {{media}} ({before!r}); check the template"
            )
        # as FavorProcessor: control-token text typed in the question stays text, the placeholder is refused
        if self.processor.av_token in question:
            raise ValueError(
                f"question: contains the AV placeholder {self.processor.av_token!r}; the prompt template places it"
            )
        escape = checked_questions(
            [question], self.processor.tokenizer, self.processor.av_token, (self.template,)
        )
        suffix = self.processor.tokenizer(after, add_special_tokens=False, split_special_tokens=escape)[
            "input_ids"
        ]
        tail, tail_spans = self.media.tail() if include_partial else (None, [])
        # the partial window(s), laid out as closed ones: [time text] + AV tokens each
        av_id = self.model.config.av_token_id
        tail_ids: list[int] = []
        tail_parts: list[torch.Tensor] = []
        for i, s in enumerate(tail_spans):
            text = self._time_ids(s.start)
            tail_ids += [*text, *([av_id] * s.num_tokens)]
            if text:
                tail_parts.append(self.context.embed_ids(text))
            tail_parts.append(tail[i * s.num_tokens : (i + 1) * s.num_tokens])
        self.context.check_room(len(tail_ids) + len(suffix) + max_new_tokens, f"question {question!r}")
        base = self.context.length
        ids = self.context.ids() + tail_ids + suffix
        spans = self.windows
        position = base
        for s in tail_spans:
            position += len(self._time_ids(s.start))
            spans.append(WindowSpan(s.index, s.start, s.end, position, s.num_tokens, True))
            position += s.num_tokens
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        generate_kwargs.setdefault("do_sample", False)
        try:
            if tail_parts:
                weight = self.model.get_input_embeddings().weight
                self.context.extend(torch.cat([t.to(weight.dtype) for t in tail_parts]))
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
        self.context.crop(input_ids.shape[1])
        with eager_attention(lm):
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
        weights = torch.stack([a[0].float() for a in out.attentions]).mean(dim=(0, 1, 2))  # (total,) keys
        shares = [(s.index, float(weights[s.position : s.position + s.num_tokens].sum())) for s in spans]
        norm = sum(v for _, v in shares) or 1.0
        ranked = sorted(((i, v / norm) for i, v in shares), key=lambda item: -item[1])
        return ranked[:top]


@contextmanager
def eager_attention(lm: Any) -> Iterator[None]:
    """Run ``lm`` with eager attention inside the block (attention weights exist only there), then restore its
    implementation, also when the block or the switch itself raises.

    transformers (v5) has a public setter, ``PreTrainedModel.set_attn_implementation``, but no public getter: the
    current value lives only in ``config._attn_implementation`` (a property over ``_attn_implementation_internal``,
    left out of ``to_dict``), which transformers' own attention dispatch reads. We read it there, in this one place.
    """
    previous = lm.config._attn_implementation
    try:
        lm.set_attn_implementation("eager")
        yield
    finally:
        if lm.config._attn_implementation != previous:
            lm.set_attn_implementation(previous)
