"""Shared parts of the benchmarks: interleaved timing, FLOP counting, and the one table every script adds rows to.

Every speed figure is a ratio of two things timed alternately in the same process (rounds of one call each), so
load from other processes on a shared machine hits both alike: the ratio is the median over rounds of the
per-round ratio, the times shown are medians.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode


class Timings(dict):
    """Median seconds per callable (``timings[name]``), and each round's times for paired ratios."""

    def __init__(self, rounds: dict[str, list[float]]) -> None:
        super().__init__({name: statistics.median(ts) for name, ts in rounds.items()})
        self.rounds = rounds

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median over rounds of ``numerator`` time / ``denominator`` time: both were timed back to back in each
        round, so load that drifts between rounds cancels (more robust than a ratio of medians)."""
        pairs = zip(self.rounds[numerator], self.rounds[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)


def paired_seconds(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> Timings:
    """Seconds of each callable, timed in interleaved rounds after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return Timings(times)


def cuda_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median milliseconds of ``fn`` on the GPU by CUDA events, after ``warmup`` calls (compilation, autotuning)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as ``torch.utils.flop_counter`` counts them (matmuls and attention)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclass
class Row:
    """One line of the table.

    Attributes:
        item: What is compared ("ours vs peer, shape").
        ours: Our figure, with its unit (e.g. "12.3 ms").
        peer: The named peer's figure measured in the same run, or "".
        ratio: The comparison (speed-up = peer time / our time, unless ``item`` says otherwise).
        flops: FLOPs of our side (one call), 0 when not meaningful.
        seconds: Our seconds per call (for GFLOP/s), 0 when not meaningful.
        target: The issue's target for this ratio, or "".
        met: Whether the target is met (None: no target).
    """

    item: str
    ours: str
    peer: str
    ratio: float | None
    flops: int = 0
    seconds: float = 0.0
    target: str = ""
    met: bool | None = None


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def format_table(rows: list[Row]) -> str:
    """The rows as a Markdown table (what docs/performance.md quotes)."""
    head = "| item | ours | peer | ratio | GFLOP (ours) | GFLOP/s (ours) | target | met |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        gflop = f"{r.flops / 1e9:.2f}" if r.flops else ""
        rate = f"{r.flops / r.seconds / 1e9:.1f}" if r.flops and r.seconds else ""
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.item} | {r.ours} | {r.peer} | {ratio} | {gflop} | {rate} | {r.target} | {met} |")
    return "\n".join(lines)
