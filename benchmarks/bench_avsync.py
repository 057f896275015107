"""Synchroniser throughput: seconds of video synchronised per second of wall time, on this CPU.

``mode="time"`` (the time rule, with per-sample lengths and dropped-step accounting) against the named peer
``mode="released"`` (a re-implementation of the released ``sequence_align_v2``: views and concatenation),
measured in the same run on the same inputs (2 fps video, 32 tokens per frame, 50 Hz Whisper-rate audio).
The ratio is time / released; > 1 would mean the time rule is faster.

Also ``load_media`` throughput (decode + resample to 2 fps frames and 16 kHz audio) on a clip written with PyAV,
in seconds of media per second; ``rows()`` gives both to ``benchmarks/bench.py``'s table.

    python benchmarks/bench_avsync.py [--batch 8] [--seconds 60] [--dim 768] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import Row, ms
from favor_avsync import TemporalSynchroniser


def _interleaved(fns: dict, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, in rounds (one call of each per round), so that load from other
    processes on the machine hits all of them alike."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns.values():
        fn()  # warm-up
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def rows(
    batch: int = 8, seconds: float = 60.0, dim: int = 768, repeats: int = 10, clip_seconds: float = 20.0
) -> list[Row]:
    """The synchroniser against the released rule, and ``load_media``, as table rows (CPU)."""
    frames, steps = int(seconds * 2), int(seconds * 2) * 25
    visual = torch.randn(batch, frames, 32, dim)
    audio = torch.randn(batch, steps, dim)
    mask = torch.ones(batch, 2)
    released, timed = TemporalSynchroniser(mode="released"), TemporalSynchroniser(mode="time")
    times = _interleaved(
        {
            "released": lambda: released(visual, audio, modality_mask=mask),
            "time": lambda: timed(visual, audio, modality_mask=mask),
        },
        repeats,
        torch.device("cpu"),
    )
    rel, tim = statistics.median(times["released"]), statistics.median(times["time"])
    video = batch * seconds
    out = [
        Row(
            f"synchroniser (time rule) vs the released rule, {batch} x {seconds:g} s, dim {dim}; "
            f"{video / tim:,.0f} s of video per second",
            ms(tim),
            ms(rel),
            statistics.median(r / t for r, t in zip(times["released"], times["time"], strict=True)),
        )
    ]
    out.append(_load_media_row(clip_seconds, max(2, repeats // 4)))
    return out


def _load_media_row(seconds: float, repeats: int) -> Row:
    import tempfile
    from pathlib import Path

    from favor_avsync import load_media
    from favor_avsync.testing import make_test_clip

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "clip.mp4"
        make_test_clip(path, duration=seconds, fps=25.0, size=(320, 240), tone_at=1.0)
        times = _interleaved(
            {"load": lambda: load_media(path, fps=2.0, sample_rate=16000, progress=False)},
            repeats,
            torch.device("cpu"),
        )
    took = statistics.median(times["load"])
    return Row(
        f"load_media: {seconds:g} s mp4 (320x240, 25 fps, AAC) -> 2 fps frames + 16 kHz audio; "
        f"{seconds / took:,.0f} s of media per second",
        ms(took),
        "",
        None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="video length per sample")
    parser.add_argument("--dim", type=int, default=768, help="visual and audio feature width")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    frames = int(args.seconds * 2)
    steps = frames * 25
    torch.manual_seed(0)
    device = torch.device(args.device)
    visual = torch.randn(args.batch, frames, 32, args.dim, device=device)
    audio = torch.randn(args.batch, steps, args.dim, device=device)
    mask = torch.ones(args.batch, 2, device=device)
    video_seconds = args.batch * args.seconds

    released = TemporalSynchroniser(mode="released")
    timed = TemporalSynchroniser(mode="time")
    assert torch.equal(
        released(visual, audio, modality_mask=mask).features,
        timed(visual, audio, modality_mask=mask).features,
    )

    lengths = torch.randint(steps // 2, steps + 1, (args.batch,), device=device)
    beats = torch.randn(args.batch, int(args.seconds * 48.83), args.dim, device=device)
    two = TemporalSynchroniser(mode="time", audio_rates=(50.0, 48.83))
    times = _interleaved(
        {
            "released (peer)": lambda: released(visual, audio, modality_mask=mask),
            "time": lambda: timed(visual, audio, modality_mask=mask),
            "time + audio_lengths": lambda: timed(visual, audio, audio_lengths=lengths, modality_mask=mask),
            "time, 50 Hz + 48.83 Hz": lambda: two(visual, [audio, beats]),
        },
        args.repeats,
        device,
    )

    print(
        f"favor-avsync synchroniser, batch {args.batch} x {args.seconds:g} s (2 fps, 32 tokens, dim {args.dim}), "
        f"{torch.get_num_threads()} torch threads, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    print(f"  {'':26s} {'median':>10s} {'best':>10s}   seconds of video / s (median)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:26s} {med * 1e3:8.2f}ms {min(ts) * 1e3:8.2f}ms   {video_seconds / med:10.0f}")
    rel, tim = times["released (peer)"], times["time"]
    print(
        f"ratio time / released (throughput): {statistics.median(rel) / statistics.median(tim):.3f} (median), "
        f"{min(rel) / min(tim):.3f} (best)"
    )


if __name__ == "__main__":
    main()
