"""Progress shown while generating (shared by the ``favor`` CLI and the demo)."""

from __future__ import annotations

import sys
from typing import Any

from transformers.generation.streamers import BaseStreamer

__all__ = ["GenerationProgress"]


class GenerationProgress(BaseStreamer):
    """A tqdm bar over generated tokens, fed by `generate(streamer=...)` (batch size 1).

    ``generate`` first puts the prompt, then each new token; the bar counts the new tokens.
    """

    def __init__(self, max_new_tokens: int, desc: str = "generating") -> None:
        from tqdm.auto import tqdm

        # disable=None: tqdm shows the bar only on a terminal (logs and pipes stay clean)
        self._bar = tqdm(
            total=max_new_tokens, desc=desc, unit="tok", leave=False, file=sys.stderr, disable=None
        )
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._bar.update(1)

    def end(self) -> None:
        self._bar.close()
