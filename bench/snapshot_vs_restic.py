"""Snapshot chunk store vs restic, side by side on the same raw volume file.

    python bench/snapshot_vs_restic.py                        # 4 GiB volume (issue 5)
    python bench/snapshot_vs_restic.py --size 1G --chunk-sizes 256K,1M,4M

Steps on a raw sparse volume, 50 % allocated with random data extents: full backup;
(a) 1 % rewritten in 8 contiguous extents + incremental; (b) 4,096 random 4 KiB writes +
incremental; restore of the last snapshot; then an all-holes volume (twice the size).
For each step: wall time and bytes added to the repository (apparent size of every file
in it, ``du -sb``).  secstor uses a Local store in a temp dir; restic a local repository
(format 2, compression auto), with its cache in the temp dir, outside the repository.
Needs the ``restic`` binary (Debian: apt-get install restic).  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from secstor.chunks import ChunkStore, backup, restore  # noqa: E402
from secstor.stores.local import LocalDriver  # noqa: E402

MiB = 1 << 20
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(text[:-1]) * UNITS[text[-1]]) if text[-1] in UNITS else int(text)


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def make_volume(path: Path, size: int, rng: random.Random) -> None:
    """Sparse file, half data: alternating random-length data extents and holes."""
    with open(path, "wb") as f:
        f.truncate(size)
        pos, data = 0, True
        while pos < size:
            length = min(rng.randrange(1, 64) * MiB, size - pos)
            data = not data
            if data:
                for off in range(pos, pos + length, 8 * MiB):
                    f.seek(off)
                    f.write(os.urandom(min(8 * MiB, pos + length - off)))
            pos += length
        f.flush()
        os.fsync(f.fileno())


def rewrite_extents(path: Path, size: int, rng: random.Random) -> None:
    """(a) 1 % of the volume rewritten, in 8 contiguous extents."""
    extent = size // 100 // 8
    with open(path, "r+b") as f:
        for _ in range(8):
            f.seek(rng.randrange(0, size - extent) // 4096 * 4096)
            f.write(os.urandom(extent))


def random_writes(path: Path, size: int, rng: random.Random) -> None:
    """(b) 4,096 random 4 KiB writes."""
    with open(path, "r+b") as f:
        for _ in range(4096):
            f.seek(rng.randrange(0, size // 4096) * 4096)
            f.write(os.urandom(4096))


class Restic:
    def __init__(self, work: Path) -> None:
        self.repo = work / "restic-repo"
        self.env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(self.repo),
                    "RESTIC_CACHE_DIR": str(work / "restic-cache")}
        self.run("init", "--repository-version", "2")

    def run(self, *args: str) -> None:
        subprocess.run(["restic", "--quiet", *args], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def backup(self, volume: Path) -> None:
        self.run("backup", str(volume))

    def restore(self, volume: Path, target: Path) -> None:
        self.run("restore", "latest", "--target", str(target), "--include", str(volume))


class Secstor:
    def __init__(self, work: Path, chunk_size: int) -> None:
        self.repo = work / f"secstor-{chunk_size}"
        self.store = ChunkStore(LocalDriver(self.repo), "snapshots/bench")
        self.chunk_size = chunk_size
        self.last = None

    def backup(self, volume: Path) -> None:
        self.last, _ = backup(volume, self.store, self.last, chunk_size=self.chunk_size)

    def restore(self, volume: Path, target: Path) -> None:
        restore(self.last, self.store, target / "restored.raw")


def measured(tool, step, *args) -> tuple[float, int]:
    before = tree_bytes(tool.repo)
    start = time.perf_counter()
    step(*args)
    return time.perf_counter() - start, tree_bytes(tool.repo) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="4G", help="volume size (default 4G)")
    parser.add_argument("--chunk-sizes", default="256K", help="secstor chunk sizes to compare, e.g. 256K,1M,4M")
    parser.add_argument("--workdir", default=None, help="where to put volumes and repositories (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="secstor-bench-", dir=args.workdir))
    try:
        rng = random.Random(args.seed)
        volume = work / "volume.raw"
        make_volume(volume, size, rng)
        allocated = os.stat(volume).st_blocks * 512
        tools = {"restic": Restic(work)} | {
            f"secstor {cs // 1024} KiB": Secstor(work, cs) for cs in map(parse_size, args.chunk_sizes.split(","))
        }
        rows: dict[str, dict[str, tuple[float, int]]] = {name: {} for name in tools}
        steps = [
            ("full", None),
            ("(a) 1 % in 8 extents", rewrite_extents),
            ("(b) 4096 x 4 KiB", random_writes),
        ]
        for label, mutate in steps:
            if mutate:
                mutate(volume, size, rng)
            for name, tool in tools.items():
                rows[name][label] = measured(tool, tool.backup, volume)
        for name, tool in tools.items():
            target = work / f"restore-{name.replace(' ', '-')}"
            target.mkdir()
            start = time.perf_counter()
            tool.restore(volume, target)
            rows[name]["restore"] = (time.perf_counter() - start, 0)
            shutil.rmtree(target)
        holes = work / "holes.raw"
        with open(holes, "wb") as f:
            f.truncate(2 * size)
        for name, tool in tools.items():
            rows[name]["all-holes"] = measured(tool, tool.backup, holes)

        print(f"volume {size / (1 << 30):g} GiB, {allocated / size:.0%} allocated; all-holes volume {2 * size / (1 << 30):g} GiB")
        labels = [label for label, _ in steps] + ["restore", "all-holes"]
        print("| tool | " + " | ".join(labels) + " |")
        print("|---|" + "---|" * len(labels))
        for name in tools:
            cells = []
            for label in labels:
                secs, added = rows[name][label]
                cells.append(f"{secs:.2f} s" + ("" if label == "restore" else f", {added / MiB:.2f} MiB"))
            print(f"| {name} | " + " | ".join(cells) + " |")
        # The full step stores the allocated data once plus each tool's own structures; the
        # exact difference is what decides "no more bytes stored" there.
        for name in tools:
            added = rows[name]["full"][1]
            print(f"{name}: full step added {added} bytes, {(added - allocated) / 1024:+.1f} KiB over the "
                  f"{allocated} bytes of allocated data")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
