"""Region upload benchmark: one large file Local → S3 (a moto server on loopback) through
secstor's S3 driver, side by side with `rclone copyto` to the same kind of endpoint.

    .venv/bin/python bench/region_upload.py                         # 2 GiB, 2 runs
    .venv/bin/python bench/region_upload.py --size 256M --runs 1    # quick run

secstor runs `secstor.movers.transfer.copy_verified` from a Local store to an S3 store built by
`driver_for` from store details (the path of a template synchronised up to a region store): a
parallel multipart upload hashed (SHA-256) as it streams and verified before it is completed.
rclone runs twice: with secstor's part size and concurrency, and with its own defaults (5 MiB
chunks, 4 at once; it also reads the file once more beforehand for the MD5 it stores).

Every upload is a child process of its own, so its peak RSS (getrusage of that child) shows
the memory bound, and gets a fresh moto server (moto keeps what it receives), started before
the clock starts. Times are the child's wall-clock time, start-up included; "uploader CPU s" is
the child's user + system time, the client's own cost (moto, the server, is the bottleneck of the
wall-clock figures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MIB, human_size, machine, markdown_table, parse_size, temp_dir, write_image  # noqa: E402
from tests.stores.helpers import s3_client  # noqa: E402
from tests.support.moto import moto_server_process  # noqa: E402

ACCESS = SECRET = "testing"
KEY = "template/tmpl/2/201/image.raw"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(8 * MIB):
            digest.update(piece)
    return digest.hexdigest()


def secstor_child(args: argparse.Namespace) -> None:
    """The upload itself, in the child process: Local store → S3 store, verified."""
    from secstor.movers.checksums import Checksum
    from secstor.movers.transfer import copy_verified
    from secstor.stores.factory import driver_for

    src = driver_for("Local", f"file://{Path(args.file).parent}", None, mounter=None)
    dst = driver_for("S3", "", {"accesskey": ACCESS, "secretkey": SECRET, "endpoint": args.endpoint,
                                "bucket": args.bucket, "usehttps": "false", "partsize": str(args.part_size),
                                "uploadconcurrency": str(args.concurrency)}, mounter=None)
    result = copy_verified(src, Path(args.file).name, dst, KEY, expected=Checksum("SHA-256", args.sha256))
    print(json.dumps({"bytes": result.size, "part_size": dst.part_size_for(result.size)}))


def run_child(command: list[str], work: Path, env: dict[str, str] | None = None) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, peak RSS bytes, stdout) of one child process.

    GNU time runs it: Linux counts the memory of the process that forked a child into that
    child's peak RSS (it is the child's until exec), so a child of this (large) process would
    report our size; a child of `time` reports its own."""
    report = work / "rusage"
    started = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", str(report), *command], stdout=subprocess.PIPE,
                          env=env)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} failed with {proc.returncode}")
    rss_kib, user, system = report.read_text().split()[-3:]
    return seconds, float(user) + float(system), int(rss_kib) * 1024, proc.stdout.decode()


def rclone_env(endpoint: str) -> dict[str, str]:
    # No config file: the remote is defined by RCLONE_CONFIG_* variables only.
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**base, "RCLONE_CONFIG": "/dev/null", "RCLONE_CONFIG_MOTO_TYPE": "s3",
            "RCLONE_CONFIG_MOTO_PROVIDER": "Other", "RCLONE_CONFIG_MOTO_ENDPOINT": f"http://{endpoint}",
            "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": ACCESS, "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": SECRET}


def one_upload(tool: str, image: Path, sha256: str, part: int, concurrency: int) -> tuple[float, float, int, int]:
    """Upload ``image`` with ``tool`` to a fresh moto server; (seconds, CPU seconds, peak RSS, part size)."""
    with moto_server_process() as endpoint:
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket="bench")
        if tool == "secstor":
            seconds, cpu, rss, out = run_child([sys.executable, __file__, "--child", "--endpoint", endpoint,
                                           "--bucket", "bench", "--file", str(image), "--sha256", sha256,
                                           "--part-size", str(part), "--concurrency", str(concurrency)],
                                          image.parent)
            part = json.loads(out)["part_size"]
        else:
            # --s3-no-head: rclone 1.60 reads the object back with ?versionId=null, which moto
            # answers 400, and then uploads it all again.
            flags = ["--s3-no-head"] + ([] if tool == "rclone-defaults" else [
                f"--s3-chunk-size={part // MIB}M", f"--s3-upload-concurrency={concurrency}"])
            seconds, cpu, rss, _ = run_child(["rclone", "copyto", "-q", *flags, str(image), f"moto:bench/{KEY}"],
                                        image.parent, env=rclone_env(endpoint))
        head = s3.head_object(Bucket="bench", Key=KEY)
        if head["ContentLength"] != image.stat().st_size:
            raise SystemExit(f"{tool}: uploaded {head['ContentLength']} bytes, not {image.stat().st_size}")
        if s3.list_multipart_uploads(Bucket="bench").get("Uploads"):
            raise SystemExit(f"{tool}: left an unfinished multipart upload")
        return seconds, cpu, rss, part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2G", help="file size (e.g. 2G, 256M)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--part-size", default="16M", help="secstor's part size (its default: 16M)")
    parser.add_argument("--concurrency", type=int, default=4, help="parts in flight (secstor's default: 4)")
    parser.add_argument("--dir", default=None,
                        help="where the file is written (default: $SECSTOR_BENCH_TMP, else /var/tmp)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--sha256", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.part_size = int(args.part_size)
        return secstor_child(args)

    size, part = parse_size(args.size), parse_size(args.part_size)
    if not shutil.which("rclone") or not os.path.exists("/usr/bin/time"):
        raise SystemExit("needs rclone and GNU time: apt-get install rclone time")
    tools = ["secstor", "rclone-same", "rclone-defaults"]
    labels = {"secstor": "secstor S3 driver (copy_verified)",
              "rclone-same": f"rclone copyto, {part // MIB} MiB chunks x {args.concurrency}",
              "rclone-defaults": "rclone copyto, defaults (5 MiB chunks x 4, MD5 pre-pass)"}
    rows = []
    with temp_dir("region-upload", args.dir) as work:
        image = work / "image.raw"
        write_image(image, size)
        sha256 = sha256_of(image)  # also warms the page cache: every tool reads from memory
        for run in range(1, args.runs + 1):
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            for tool in tools:
                seconds, cpu, rss, used_part = one_upload(tool, image, sha256, part, args.concurrency)
                concurrency = 4 if tool == "rclone-defaults" else args.concurrency
                part_text = "5 MiB" if tool == "rclone-defaults" else human_size(used_part)
                rows.append([run, load, labels[tool], part_text, concurrency, f"{seconds:.1f}",
                             f"{size / seconds / 1e6:.0f}", f"{cpu:.1f}", f"{rss / MIB:.0f}"])
    print(f"\n{human_size(size)} file, Local → S3 (moto on loopback); {machine()}\n`{' '.join(sys.argv)}`\n")
    print(markdown_table(["run", "load (1/5/15 min)", "tool", "part size", "parts in flight", "seconds", "MB/s",
                          "uploader CPU s", "peak RSS MiB"], rows))


if __name__ == "__main__":
    main()
