"""The LLM side of a stream: a KV cache holding ``prefix | window 0 | window 1 | ...`` and what to do when it is full.

Layout (positions ``0 .. L-1`` in order, as one offline prompt would have them)::

    BOS + prompt text before {media}   | AV tokens of window 0 | [time text] AV tokens of window 1 | ...
    <------------------------------------------------ cached, never recomputed ---------------------------->
    then, for one `ask` only: [partial window] + prompt text after {media} with the question + the answer

The offline prompt is ``BOS + before + AV placeholders + after(question)`` (`FavorProcessor`), so the cached part
is exactly its first ``L`` positions and the question's tokens follow at the same positions: the answer equals
offline generation (same model, greedy). `ask` crops the question and answer off (``DynamicCache.crop``).

Context policy (the LLM's context is ``text_config.max_position_embeddings`` unless given): released settings give
384 AV tokens per minute, so a 2048-token Vicuna is full after about 5 minutes. ``"error"`` (default) raises a
``ValueError`` naming the limit when a window or a question would not fit. ``"keep_recent"`` drops the oldest
windows (to ``keep_fraction`` of the room for AV tokens) and re-prefills the prompt prefix and the windows kept from
their stored embeddings: the cost of one prefill every ``(1 - keep_fraction) x room`` tokens, never a silent
truncation (the dropped windows are logged and `StreamingSession.windows` says what is in context).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from .spans import WindowSpan

__all__ = ["ContextPolicy", "StreamContext"]

logger = logging.getLogger("favor_llm.streaming")
_POLICIES = ("error", "keep_recent")


@dataclass(frozen=True)
class ContextPolicy:
    """What a stream does when its context would exceed the LLM's.

    Attributes:
        mode: ``"error"`` (a ``ValueError`` naming the limit) or ``"keep_recent"`` (drop the oldest windows and
            re-prefill).
        max_tokens: the context limit (default: the LLM's ``max_position_embeddings``).
        reserve_tokens: room always kept free for a question, a partial window and the answer.
        keep_fraction: ``keep_recent`` keeps this fraction of the AV room when it drops windows (so it re-prefills
            once per ``(1 - keep_fraction)`` of the room, not at every window).
    """

    mode: str = "error"
    max_tokens: int | None = None
    reserve_tokens: int = 256
    keep_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in _POLICIES:
            raise ValueError(f"context_policy: mode must be one of {_POLICIES}, got {self.mode!r}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"context_policy: max_tokens must be >= 1, got {self.max_tokens}")
        if self.reserve_tokens < 0:
            raise ValueError(f"context_policy: reserve_tokens must be >= 0, got {self.reserve_tokens}")
        if not 0.0 <= self.keep_fraction < 1.0:
            raise ValueError(f"context_policy: keep_fraction must be in [0, 1), got {self.keep_fraction}")


@dataclass
class _Window:
    span: WindowSpan
    ids: list[int]  # text ids before its AV tokens (time text) + the AV placeholder ids
    embeds: torch.Tensor | None  # (len(ids), E), kept for re-prefill under keep_recent


class StreamContext:
    """A `transformers.DynamicCache` over ``prefix | windows``, appended to window by window.

    Args:
        model: the `FavorModel` (its ``causal_lm`` and input embeddings are used).
        prefix_ids: ``BOS + prompt text before {media}`` token ids.
        policy: the `ContextPolicy`.
    """

    def __init__(self, model: Any, prefix_ids: list[int], policy: ContextPolicy) -> None:
        self.model = model
        self.policy = policy
        limit = policy.max_tokens or getattr(model.config.text_config, "max_position_embeddings", None)
        if limit is None:
            raise ValueError(
                "context_policy: max_tokens is required (the LLM config has no max_position_embeddings)"
            )
        self.max_tokens = int(limit)
        self.prefix_ids = list(prefix_ids)
        if len(self.prefix_ids) + policy.reserve_tokens >= self.max_tokens:
            raise ValueError(
                f"context_policy: the prompt prefix ({len(self.prefix_ids)} tokens) plus reserve_tokens="
                f"{policy.reserve_tokens} leave no room for AV tokens in the LLM's {self.max_tokens}-token context"
            )
        self.windows: deque[_Window] = deque()
        self.dropped_windows = 0
        self.reprefills = 0
        self.cache = DynamicCache()
        self._prefill(self._embed(self.prefix_ids))

    # ----------------------------------------------------------------------------------------------- state
    @property
    def length(self) -> int:
        """Tokens in the cache (prefix + windows)."""
        return int(self.cache.get_seq_length())

    def ids(self) -> list[int]:
        """The token ids the cache holds (AV tokens as the AV placeholder id), as an offline prompt would."""
        out = list(self.prefix_ids)
        for window in self.windows:
            out += window.ids
        return out

    # --------------------------------------------------------------------------------------------- updates
    def append(self, span: WindowSpan, text_ids: list[int], av_embeds: torch.Tensor) -> WindowSpan:
        """Append one closed window (optional text ids, then its ``(Q, E)`` AV embeddings) to the cache.

        Returns:
            its span with its LLM position filled in.

        Raises:
            ValueError: under ``"error"``, when the window would leave less than ``reserve_tokens`` free.
        """
        av_id = self.model.config.av_token_id
        ids = [*text_ids, *([av_id] * av_embeds.shape[0])]
        if self.length + len(ids) + self.policy.reserve_tokens > self.max_tokens:
            self._make_room(len(ids), f"window {span.index} ({span.start:.1f}-{span.end:.1f} s)")
        embeds = self._with_text(text_ids, av_embeds)
        span = WindowSpan(span.index, span.start, span.end, self.length + len(text_ids), av_embeds.shape[0])
        self._prefill(embeds)
        keep = embeds.detach() if self.policy.mode == "keep_recent" else None
        self.windows.append(_Window(span, ids, keep))
        return span

    def check_room(self, extra: int, what: str) -> None:
        """Make room for ``extra`` temporary tokens (a question, a partial window, the answer) or raise."""
        if self.length + extra > self.max_tokens:
            self._make_room(extra - self.policy.reserve_tokens, what)

    def extend(self, embeds: torch.Tensor) -> None:
        """Run ``(n, E)`` embeddings through the LLM into the cache (temporary content; `crop` removes it)."""
        self._prefill(embeds)

    def crop(self, length: int) -> None:
        """Drop everything after the first ``length`` cached tokens (`DynamicCache.crop`, which takes the count to
        remove as a negative number)."""
        remove = self.length - int(length)
        if remove < 0:
            raise ValueError(f"length: {length} is past the {self.length} cached tokens")
        if remove:
            self.cache.crop(-remove)

    def embed_ids(self, ids: list[int]) -> torch.Tensor:
        """``(n, E)`` input embeddings of text ids."""
        return self._embed(ids)

    # ------------------------------------------------------------------------------------------- internals
    def _make_room(self, needed: int, what: str) -> None:
        room = self.max_tokens - self.policy.reserve_tokens - len(self.prefix_ids)
        if self.policy.mode == "error" or needed > room:
            raise ValueError(
                f"{what}: the LLM's context is {self.max_tokens} tokens (context_policy.max_tokens / the LLM's "
                f"max_position_embeddings) and {self.length} are in use, {self.policy.reserve_tokens} reserved, "
                f"{needed} more needed; use context_policy=ContextPolicy(mode='keep_recent') to keep only the most "
                "recent windows, or ask shorter questions / fewer new tokens"
            )
        keep = int(room * self.policy.keep_fraction)
        used = sum(len(w.ids) for w in self.windows)
        dropped = 0
        while self.windows and (used > keep or used + needed > room):
            used -= len(self.windows.popleft().ids)
            dropped += 1
        self.dropped_windows += dropped
        first = self.windows[0].span if self.windows else None
        logger.info(
            "context full (%d tokens): dropped the %d oldest window(s); context now starts at %s",
            self.max_tokens,
            dropped,
            f"{first.start:.1f} s" if first else "the next window",
        )
        self._reprefill()

    def _reprefill(self) -> None:
        """Rebuild the cache from the prefix and the kept windows' stored embeddings (positions renumbered)."""
        self.reprefills += 1
        self.cache = DynamicCache()
        parts = [self._embed(self.prefix_ids)] + [w.embeds for w in self.windows]
        self._prefill(torch.cat(parts))
        position = len(self.prefix_ids)
        for window in self.windows:
            s = window.span
            text = len(window.ids) - s.num_tokens
            window.span = WindowSpan(s.index, s.start, s.end, position + text, s.num_tokens)
            position += len(window.ids)

    def _with_text(self, text_ids: list[int], av_embeds: torch.Tensor) -> torch.Tensor:
        av_embeds = av_embeds.to(self._embedding.weight.dtype)
        return torch.cat([self._embed(text_ids), av_embeds]) if text_ids else av_embeds

    @property
    def _embedding(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def _embed(self, ids: list[int]) -> torch.Tensor:
        weight = self._embedding.weight
        return self._embedding(torch.tensor(ids, dtype=torch.long, device=weight.device))  # (n, E)

    @torch.no_grad()
    def _prefill(self, embeds: torch.Tensor) -> None:
        """Append ``(n, E)`` embeddings at the next positions (an all-ones mask, as the offline prompt has)."""
        if embeds.shape[0] == 0:
            return
        start = self.length
        total = start + embeds.shape[0]
        device = embeds.device
        self.model.causal_lm(
            inputs_embeds=embeds[None],
            attention_mask=torch.ones(1, total, dtype=torch.long, device=device),
            position_ids=torch.arange(start, total, device=device)[None],
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
