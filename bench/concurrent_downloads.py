"""50 concurrent template downloads on one `secstor worker`: peak memory and total time.

    python bench/concurrent_downloads.py [--count 50] [--size 200M]

A temp home with a SQLite database: `secstor serve --workers 0` bootstraps it and answers the
API; the settings secstorage.worker.job.slots=<count> and secstorage.allowed.internal.sites=
127.0.0.0/8 are set; then a real `secstor worker` process starts, and <count> templates (format
RAW, <size> each, distinct URLs on a local nginx) are registered through the API.  The worker's
peak RSS is its kernel high-water mark (VmHWM in /proc/<pid>/status, read just before it is
stopped) and the total time runs from the first registerTemplate to the last copy Ready.
qemu-img, which inspects each image in a child process with its own memory limit, is not counted.
Baseline: <count> parallel `curl -o file` of the same URLs, their RSS summed (sampled every 20 ms).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import httpx
from common import (MIB, Secstor, api, human_size, machine, markdown_table, nginx, parse_size, running,
                    temp_dir, write_image)

GOAL_MIB = 300


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def curl_baseline(urls: list[str], work: Path) -> tuple[float, float]:
    """(seconds, peak summed RSS in MiB) of one curl per URL, all at once."""
    out = work / "curl"
    out.mkdir()
    start = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-sf", "-o", str(out / f"{n}.raw"), url]) for n, url in enumerate(urls)]
    peak = 0
    while any(p.poll() is None for p in procs):
        total = 0
        for p in procs:
            try:
                total += status_kib(p.pid, "VmRSS")
            except (FileNotFoundError, ProcessLookupError):
                pass  # finished between poll() and the read
        peak = max(peak, total)
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise SystemExit("a curl failed")
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return elapsed, peak / 1024


def secstor_run(urls: list[str], work: Path, count: int) -> tuple[float, float, float]:
    """(seconds, worker peak RSS MiB, worker RSS MiB when idle before the downloads)."""
    home = work / "home"
    server = Secstor(home=home, database_url=f"sqlite:///{home}/secstor.db")
    worker = Secstor(home=home, database_url=server.database_url)
    with running(worker, server), httpx.Client(timeout=60) as client:
        server.serve(workers=0)

        def call(command: str, /, **params) -> dict:
            return api(client, server.api_url, server.keys, command, **params)

        call("updateConfiguration", name="secstorage.worker.job.slots", value=str(count))
        call("updateConfiguration", name="secstorage.allowed.internal.sites", value="127.0.0.0/8")
        zone = call("listZones")["zone"][0]["id"]
        worker.worker()
        time.sleep(3)  # let it start and settle, to report its idle size
        idle = status_kib(worker.proc.pid, "VmRSS") / 1024
        start = time.perf_counter()
        ids = {call("registerTemplate", name=f"bench-{n}", url=url, format="RAW", hypervisor="KVM",
                    zoneid=zone)["template"][0]["id"] for n, url in enumerate(urls)}
        while True:
            listed = call("listTemplates", templatefilter="self", pagesize=500)
            mine = [t for t in listed.get("template", []) if t["id"] in ids]
            failed = [t["status"] for t in mine if "rror" in t.get("status", "")]
            if failed:
                raise SystemExit(f"downloads failed: {failed[:3]}")
            if len(mine) == count and all(t.get("isready") for t in mine):
                break
            if worker.proc.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.proc.returncode}")
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        peak = status_kib(worker.proc.pid, "VmHWM") / 1024
    return elapsed, peak, idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size", default="200M", help="size of each image (default 200M)")
    parser.add_argument("--workdir", help="default $SECSTOR_BENCH_TMP or /var/tmp")
    args = parser.parse_args()
    size = parse_size(args.size)
    with temp_dir("concurrent", args.workdir) as work:
        www = work / "www"
        www.mkdir()
        write_image(www / "image-0.raw", size)
        for n in range(1, args.count):  # distinct URLs (and files) for the same bytes
            os.link(www / "image-0.raw", www / f"image-{n}.raw")
        with nginx(www) as base:
            urls = [f"{base}/image-{n}.raw" for n in range(args.count)]
            curl_time, curl_rss = curl_baseline(urls, work)
            secstor_time, secstor_peak, secstor_idle = secstor_run(urls, work, args.count)
    total = args.count * size / MIB
    rows = [
        [f"{args.count} × `curl -o file` (baseline)", f"{curl_time:.1f}", f"{total / curl_time:.0f}",
         f"{curl_rss:.0f} (sum of {args.count} processes)", ""],
        [f"`secstor worker`, {args.count} slots: registerTemplate → all Ready", f"{secstor_time:.1f}",
         f"{total / secstor_time:.0f}", f"{secstor_peak:.0f} (one process; {secstor_idle:.0f} idle)",
         "yes" if secstor_peak < GOAL_MIB else "**no**"],
    ]
    print()
    print(f"{args.count} concurrent downloads of {human_size(size)} each ({human_size(args.count * size)} in all) "
          f"from nginx over loopback; {machine()}")
    print()
    print(markdown_table(["path", "seconds", "MiB/s in all", "peak RSS MiB", f"under {GOAL_MIB} MiB"], rows))


if __name__ == "__main__":
    main()
