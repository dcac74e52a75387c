"""Store requests of an incremental snapshot backup with few changes (issue 5).

    python bench/chunk_requests.py                     # 1 GiB volume, 16 random 4 KiB writes
    python bench/chunk_requests.py --size 4G --writes 64

A raw sparse volume, half allocated with random data (bench/snapshot_vs_restic.py's volume), is
backed up in full, then ``--writes`` random 4 KiB writes are made and an incremental backup is
taken ``--hours-later`` (default 24: a daily snapshot policy; the backup is given that clock),
on a Local store and on S3 (a moto server on loopback).  Two ways, each in its own
deduplication domain from the same volume content:

- "stat every chunk": ``backup`` without a previous manifest, which asks the store about every
  allocated chunk, and touches those older than half the GC grace: what an incremental backup
  cost before it trusted the previous manifest;
- "reuse the previous manifest": ``backup(..., previous)``, today's incremental backup.

Counted for the incremental step: the driver calls the chunk store makes (a CountingDriver
around the real driver) and, on S3, the S3 API operations the client sends.  Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snapshot_vs_restic import make_volume, parse_size  # noqa: E402

from secstor.chunks import DEFAULT_CHUNK_SIZE, ChunkStore, backup  # noqa: E402
from secstor.stores import LocalDriver, S3Driver, copy_file_sparse  # noqa: E402
from tests.chunks.counting import CountingDriver, s3_operations  # noqa: E402
from tests.stores.helpers import s3_client, s3_config  # noqa: E402
from tests.support.moto import moto_server_process  # noqa: E402

MODES = ("stat every chunk", "reuse the previous manifest")


def small_writes(path: Path, size: int, count: int, rng: random.Random) -> None:
    with open(path, "r+b") as f:
        for _ in range(count):
            f.seek(rng.randrange(0, size // 4096) * 4096)
            f.write(rng.randbytes(4096))


def measure(driver, prefix: str, volume: Path, work: Path, args, reuse: bool):
    """Full backup, the same small writes, incremental: its driver calls, S3 operations, seconds."""
    copy = work / f"{prefix.replace('/', '-')}.raw"
    copy_file_sparse(volume, copy)
    store = ChunkStore(driver, prefix)
    first, _ = backup(copy, store, chunk_size=DEFAULT_CHUNK_SIZE)
    small_writes(copy, parse_size(args.size), args.writes, random.Random(args.seed))
    counting = CountingDriver(driver)
    later = timedelta(hours=args.hours_later)
    start = time.perf_counter()
    with s3_operations(driver) if isinstance(driver, S3Driver) else nullcontext(Counter()) as ops:
        _, stats = backup(copy, ChunkStore(counting, prefix), first if reuse else None, chunk_size=DEFAULT_CHUNK_SIZE,
                          now=lambda: datetime.now(timezone.utc) + later)
    seconds = time.perf_counter() - start
    copy.unlink()
    return counting.calls, ops, seconds, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1G", help="volume size (default 1G)")
    parser.add_argument("--writes", type=int, default=16, help="random 4 KiB writes between the backups")
    parser.add_argument("--workdir", default=None, help="where to put the volume and the Local store")
    parser.add_argument("--hours-later", type=float, default=24, help="clock of the incremental backup")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="secstor-bench-", dir=args.workdir))
    rows = []
    try:
        volume = work / "volume.raw"
        make_volume(volume, size, random.Random(args.seed))
        with moto_server_process() as endpoint:
            client = s3_client(endpoint)
            client.create_bucket(Bucket="bench")
            drivers = {"Local": LocalDriver(work / "store"), "S3 (moto)": S3Driver(s3_config(endpoint, "bench"))}
            for kind, driver in drivers.items():
                for n, mode in enumerate(MODES):
                    calls, ops, seconds, stats = measure(driver, f"snapshots/{n}", volume, work, args, reuse=n == 1)
                    rows.append((kind, mode, stats.chunks_new + stats.chunks_reused, stats.chunks_new,
                                 calls["stat"], calls["put"], calls["copy_within"],
                                 sum(calls.values()), sum(ops.values()) if ops else "-", f"{seconds:.2f} s"))
                driver.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = ("store", "incremental backup", "data chunks", "new", "stat", "put", "touch", "driver calls",
              "S3 requests", "time")
    print(f"{args.size} volume, half allocated, {args.writes} random 4 KiB writes, "
          f"{DEFAULT_CHUNK_SIZE // 1024} KiB chunks, incremental {args.hours_later:g} h after the full\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
