"""Download + verify one image from a local nginx: secstor against curl and sha256sum, same run.

    python bench/download_verify.py [--size 2G] [--runs 3]

Rows (each run goes through every row in turn, the table shows the median run):
  curl -o + sha256sum        two passes: download to a file, then read it back to hash it
  curl | tee | sha256sum     one pass: hash while writing (the goal to match)
  ... + sync                 the same, then fsync the file: secstor fsyncs before publishing
  secstor mover, SHA-256     download_to_store into a Local store (what `secstor template seed`
                             and the movers do), in this process
  secstor mover, SHA-512+256 the same with both digests, as the template download job computes
  secstor API                registerTemplate (format RAW) on a real `secstor serve` with one
                             embedded worker until listTemplates says isready (job pick-up,
                             download, qemu-img inspection, template.properties, DB updates)
Every row's SHA-256 is checked against the same value, so a fast wrong answer cannot win.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import time
from pathlib import Path

import httpx
from common import (MIB, Secstor, api, human_size, machine, markdown_table, nginx, parse_size, running,
                    temp_dir, write_image)

from secstor.movers.download import DownloadOptions, download_to_store
from secstor.stores.local import LocalDriver

LOOPBACK = ("127.0.0.0/8",)


def _shell(cmd: str) -> str:
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, capture_output=True,
                          text=True).stdout.split()[0]


def curl_two_pass(url: str, work: Path) -> str:
    return _shell(f"curl -sf -o {work}/out {url} && sha256sum {work}/out")


def curl_one_pass(url: str, work: Path) -> str:
    return _shell(f"curl -sf {url} | tee {work}/out | sha256sum")


def curl_one_pass_sync(url: str, work: Path) -> str:
    return _shell(f"curl -sf {url} | tee {work}/out | sha256sum && sync {work}/out")


def _mover(url: str, work: Path, algorithms: tuple[str, ...]) -> str:
    driver = LocalDriver(work / "store")
    result = download_to_store(url, driver, "template/image.raw", algorithms=algorithms,
                               options=DownloadOptions(allowed_cidrs=LOOPBACK))
    return result.digests["SHA-256"]


def mover_sha256(url: str, work: Path) -> str:
    return _mover(url, work, ("SHA-256",))


def mover_both(url: str, work: Path) -> str:
    return _mover(url, work, ("SHA-512", "SHA-256"))


class ApiPath:
    """A secstor serve (SQLite, one embedded worker) that downloads through registerTemplate."""

    def __init__(self, home: Path) -> None:
        self.server = Secstor(home=home, database_url=f"sqlite:///{home}/secstor.db")
        self.client = httpx.Client(timeout=60)

    def start(self) -> None:
        self.server.serve(workers=1)
        self.call("updateConfiguration", name="secstorage.allowed.internal.sites", value=",".join(LOOPBACK))
        self.zone = self.call("listZones")["zone"][0]["id"]
        time.sleep(1.2)  # the server caches settings for a second

    def call(self, command: str, /, **params) -> dict:
        return api(self.client, self.server.api_url, self.server.keys, command, **params)

    def __call__(self, url: str, work: Path) -> str:
        t = self.call("registerTemplate", name=f"bench-{time.monotonic_ns()}", url=url, format="RAW",
                      hypervisor="KVM", zoneid=self.zone)["template"][0]
        while True:
            listed = self.call("listTemplates", templatefilter="self", id=t["id"])["template"][0]
            if listed.get("isready"):
                break
            if "rror" in listed.get("status", ""):
                raise RuntimeError(f"download failed: {listed['status']}")
            time.sleep(0.05)
        self.call("deleteTemplate", id=t["id"])  # async; frees the disk for the next run
        return self._sha256(t["id"])

    def _sha256(self, template_uuid: str) -> str:
        """The SHA-256 the job recorded (the API shows only the SHA-512 it computed)."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.server.database_url)
        with engine.connect() as conn:
            value = conn.execute(text("SELECT sha256 FROM vm_templates WHERE uuid = :u"), {"u": template_uuid}).scalar()
        engine.dispose()
        return value

    def stop(self) -> None:
        self.client.close()
        self.server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2G", help="image size, e.g. 2G (default), 256M")
    parser.add_argument("--runs", type=int, default=3, help="runs per row; the median is shown (default 3)")
    parser.add_argument("--no-api", action="store_true", help="skip the registerTemplate row")
    parser.add_argument("--workdir", help="where the served file, the downloads and the store go "
                                           "(default $SECSTOR_BENCH_TMP or /var/tmp; /dev/shm takes the disk out)")
    args = parser.parse_args()
    size = parse_size(args.size)

    with temp_dir("download", args.workdir) as work:
        served = work / "www"
        served.mkdir()
        t0 = time.monotonic()
        write_image(served / "image.raw", size)
        print(f"generated {human_size(size)} in {time.monotonic() - t0:.1f} s")
        rows = [("curl -o file && sha256sum file (two passes)", curl_two_pass),
                ("curl | tee file | sha256sum (one pass) — baseline", curl_one_pass),
                ("curl | tee file | sha256sum; sync file (one pass, durable)", curl_one_pass_sync),
                ("secstor download_to_store, Local, SHA-256", mover_sha256),
                ("secstor download_to_store, Local, SHA-512 + SHA-256 (as the job)", mover_both)]
        api_path = None
        if not args.no_api:
            api_path = ApiPath(work / "home")
            rows.append(("secstor registerTemplate RAW → isready (API, worker, inspection)", api_path))
        with nginx(served) as base, running(*([api_path.server] if api_path else [])):
            if api_path:
                api_path.start()
            url = f"{base}/image.raw"
            times: dict[str, list[float]] = {name: [] for name, _ in rows}
            digests: set[str] = set()
            for run in range(args.runs):
                for name, fn in rows:
                    dest = work / f"dest-{run}"
                    dest.mkdir()
                    subprocess.run(["sync"], check=True)  # earlier runs' dirty pages must not bill this one
                    start = time.perf_counter()
                    digests.add(fn(url, dest))
                    times[name].append(time.perf_counter() - start)
                    subprocess.run(["rm", "-rf", str(dest)], check=True)
                    print(f"run {run + 1} {name}: {times[name][-1]:.2f} s", flush=True)
            if api_path:
                api_path.stop()
        if len(digests) != 1:
            raise SystemExit(f"rows disagree on the SHA-256: {digests}")
        expected = hashlib.sha256()  # and all of them agree with the file itself
        with open(served / "image.raw", "rb") as fh:
            while chunk := fh.read(8 * MIB):
                expected.update(chunk)
        if digests != {expected.hexdigest()}:
            raise SystemExit("the SHA-256 reported is not the file's")

    baseline = statistics.median(times[rows[1][0]])
    table = []
    for name, _ in rows:
        median = statistics.median(times[name])
        table.append([name, f"{median:.2f}", f"{size / MIB / median:.0f}", f"{median / baseline:.2f}×",
                      " / ".join(f"{t:.2f}" for t in times[name])])
    print()
    print(f"Download + verify of {human_size(size)} from nginx over loopback; {machine()}; "
          f"median of {args.runs} runs")
    print()
    print(markdown_table(["path", "seconds", "MiB/s", "vs one-pass baseline", "runs (s)"], table))


if __name__ == "__main__":
    main()
