"""Write the full-size synthetic uBench replica (17,315 rows, ~96k items) as local Parquet shards.

    python bench/make_replica.py --out bench/out/replica [--rows N] [--workers 2]

The folder is read by `ubench run --dataset bench/out/replica` exactly like a local copy of the Hub
dataset. Images are synthetic (see harness/data/synthetic.py); scores on them mean nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.synthetic import REPLICA_ROWS, write_replica  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/replica"))
    parser.add_argument("--rows", type=int, default=REPLICA_ROWS)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = write_replica(args.out, args.rows, seed=args.seed, workers=args.workers)
    size = sum(p.stat().st_size for p in paths)
    print(f"{args.rows} rows in {len(paths)} shards, {size / 1e9:.2f} GB, "
          f"{time.perf_counter() - start:.0f} s → {args.out}")


if __name__ == "__main__":
    main()
