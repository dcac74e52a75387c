"""Mover benchmark: secstor's copy path (secstor.movers.transfer.copy_verified, with
secstorage.max.migrate.sessions parallel sessions) against `rclone copy` and `cp -r`, on the same
data: Local→Local on one file system, Local→Local across file systems (a tmpfs this script
mounts: needs root) and Local→S3 (a moto server on loopback).

    sudo .venv/bin/python bench/mover.py                   # 200 objects, 4 GiB
    sudo .venv/bin/python bench/mover.py --total 512M      # quick run
    sudo .venv/bin/python bench/mover.py --skip-local      # Local→S3 rows only

Every copy starts from a warm page cache (the data was just written), so what is compared is
the copy path, not the disk. secstor verifies every object against its SHA-256 (as a migration
does against the stored checksum); rclone compares sizes and, where both ends have it, MD5;
cp verifies nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MIB, parse_size  # noqa: E402
from secstor.movers.checksums import Checksum  # noqa: E402
from secstor.movers.transfer import copy_verified  # noqa: E402
from secstor.stores.base import StoreDriver  # noqa: E402
from secstor.stores.factory import driver_for  # noqa: E402
from tests.stores.helpers import s3_client  # noqa: E402
from tests.support.moto import moto_server_process  # noqa: E402

ACCESS = SECRET = "testing"


def make_objects(root: Path, count: int, total: int) -> dict[str, Checksum]:
    """``count`` incompressible files of roughly equal size summing to ``total`` bytes, under
    template/tmpl/1/<n>/; returns key -> SHA-256 (what a migration verifies against)."""
    block = os.urandom(8 * MIB)
    size = total // count
    sums = {}
    for n in range(count):
        key = f"template/tmpl/1/{n}/{n}.raw"
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            left = size
            while left:
                piece = n.to_bytes(8, "big") + block[8:min(left, len(block))]  # every file different
                piece = piece[:left]
                f.write(piece)
                digest.update(piece)
                left -= len(piece)
        sums[key] = Checksum("SHA-256", digest.hexdigest())
    return sums


def secstor_copy(src: StoreDriver, dst: StoreDriver, sums: dict[str, Checksum], sessions: int) -> None:
    def one(key: str) -> None:
        copy_verified(src, key, dst, key, expected=sums[key])

    with ThreadPoolExecutor(max_workers=sessions) as pool:
        list(pool.map(one, sums))


def rclone(src: Path, remote: str, env: dict[str, str]) -> None:
    # rclone refuses a custom CA bundle ($AWS_CA_BUNDLE) on plain-HTTP endpoints; no config file.
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    subprocess.run(["rclone", "copy", "-q", str(src), remote], check=True,
                   env={**base, "RCLONE_CONFIG": "/dev/null", **env})


def timed(fn: Callable[[], None]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


@contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def empty(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--total", default="4G", help="bytes in all (e.g. 4G, 512M)")
    parser.add_argument("--sessions", default="2,4", help="parallel copy sessions to measure")
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/var/tmp"), help="where the data is written")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--skip-local", action="store_true", help="only the Local→S3 rows")
    args = parser.parse_args()
    total = parse_size(args.total)
    sessions = [int(s) for s in args.sessions.split(",")]
    have_rclone = shutil.which("rclone") is not None
    rows: list[tuple[str, str, float, int]] = []

    work = Path(tempfile.mkdtemp(prefix="secstor-mover-", dir=args.dir))
    try:
        src_root = work / "src"
        sums = make_objects(src_root, args.objects, total)
        size = sum(p.stat().st_size for p in src_root.rglob("*") if p.is_file())
        src = driver_for("Local", f"file://{src_root}", None, mounter=None)

        def local_runs(case: str, dst_root: Path) -> None:
            for n in sessions:
                empty(dst_root)
                dst = driver_for("Local", f"file://{dst_root}", None, mounter=None)
                rows.append((case, f"secstor copy_verified, {n} sessions",
                             timed(lambda: secstor_copy(src, dst, sums, n)), size))
            if have_rclone:
                empty(dst_root)
                rows.append((case, "rclone copy (default 4 transfers)", timed(lambda: rclone(src_root, str(dst_root), {})),
                             size))
            empty(dst_root)
            rows.append((case, "cp -r", timed(lambda: subprocess.run(["cp", "-r", f"{src_root}/.", str(dst_root)],
                                                                     check=True)), size))
            empty(dst_root)

        if not args.skip_local:
            local_runs("Local→Local, one file system", work / "dst")
            with tmpfs(work / "tmpfs", size + 256 * MIB) as mounted:
                local_runs("Local→Local, across file systems (tmpfs)", mounted / "dst")
        if not args.skip_s3:
            with moto_server_process() as endpoint:
                s3 = s3_client(endpoint)
                for n in sessions:
                    bucket = f"bench-{n}"
                    s3.create_bucket(Bucket=bucket)
                    dst = driver_for("S3", "", {"accesskey": ACCESS, "secretkey": SECRET, "endpoint": endpoint,
                                                "bucket": bucket, "usehttps": "false"}, mounter=None)
                    rows.append(("Local→S3 (moto)", f"secstor copy_verified, {n} sessions",
                                 timed(lambda: secstor_copy(src, dst, sums, n)), size))
                if have_rclone:
                    s3.create_bucket(Bucket="bench-rclone")
                    env = {"RCLONE_CONFIG_MOTO_TYPE": "s3", "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
                           "RCLONE_CONFIG_MOTO_ENDPOINT": f"http://{endpoint}",
                           "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": ACCESS, "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": SECRET}
                    rows.append(("Local→S3 (moto)", "rclone copy (default 4 transfers)",
                                 timed(lambda: rclone(src_root, "moto:bench-rclone", env)), size))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.objects} objects, {size / MIB:.0f} MiB in all; `{' '.join(sys.argv)}`\n")
    print("| case | tool | seconds | MB/s |")
    print("|---|---|---:|---:|")
    for case, tool, seconds, nbytes in rows:
        print(f"| {case} | {tool} | {seconds:.2f} | {nbytes / seconds / 1e6:.0f} |")


if __name__ == "__main__":
    main()
