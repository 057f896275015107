"""Argument types shared by the ``favor`` commands (argparse ``type=`` callables: a bad value is one usage line)."""

from __future__ import annotations

import argparse

__all__ = ["positive_int", "whole_number"]


def _integer(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts of steps, clips, tokens, batch sizes)."""
    return _integer(text, 1, "a positive integer")


def whole_number(text: str) -> int:
    """An integer >= 0 (seeds, counts where 0 skips)."""
    return _integer(text, 0, "a whole number >= 0")
