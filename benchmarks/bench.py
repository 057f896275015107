"""All CPU benchmarks in one run, printed as one table (``nox -s bench``).

Rows come from ``bench_qformer.py`` (the peer, the block-causal attention, mixed lengths, overlap, memory),
``bench_avsync.py`` (synchroniser and ``load_media`` throughput) and ``bench_pipeline.py`` (the tiny model from
file to answer, by stage). Each script also runs alone. "ratio" is a speed-up (the other side's time / ours)
unless the row says otherwise; FLOPs are ``torch.utils.flop_counter``'s count of one call of our side.

    python benchmarks/bench.py [--windows 2] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import torch

import bench_avsync
import bench_pipeline
import bench_qformer
from common import format_table, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_qformer.add_arguments(parser)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    rows = bench_qformer.qformer_rows(args)
    if args.quick:
        rows += bench_avsync.rows(batch=2, seconds=10.0, dim=64, repeats=2, clip_seconds=4.0)
        rows += bench_pipeline.rows((2.0, 4.0), new_tokens=2, repeats=1)
    else:
        rows += bench_avsync.rows(repeats=2 * args.repeats)
        rows += bench_pipeline.rows(repeats=args.repeats)
    took = time.perf_counter() - start
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"FAVOR CPU benchmarks, {now}: {machine()}; python {' '.join(['benchmarks/bench.py', *sys.argv[1:]])}"
    )
    print(format_table(rows))
    print(f"(whole run {took:.0f} s)")


if __name__ == "__main__":
    main()
