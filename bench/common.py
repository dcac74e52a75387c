"""Shared pieces of the benchmarks: a throw-away nginx, test images, secstor processes, fresh
databases, and markdown output.  Everything here cleans up after itself (temp dirs, child
processes, databases), so a benchmark interrupted with Ctrl-C leaves nothing behind."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("secstor") is None:  # `python bench/x.py` from a checkout, not installed
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from secstor.security.signing import signed_params  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
PG_ADMIN_URL = os.environ.get("SECSTOR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("SECSTOR_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")


def parse_size(text: str) -> int:
    """``2G``, ``200M``, ``64K`` or a byte count."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": MIB, "G": GIB}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def human_size(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    load = os.getloadavg()[1]  # other work on the machine makes every figure slower: say so
    return (f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB RAM, Python {platform.python_version()}, "
            f"load average {load:.1f} over the last 5 minutes")


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[str(c).replace("|", "\\|") for c in row] for row in rows]  # a pipe would end the cell
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def temp_dir(prefix: str, base: str | None = None) -> Iterator[Path]:
    """A temp dir under ``base`` (default $SECSTOR_BENCH_TMP, else /var/tmp: a disk, where /tmp
    may be tmpfs)."""
    base = base or os.environ.get("SECSTOR_BENCH_TMP", "/var/tmp")
    path = Path(tempfile.mkdtemp(prefix=f"secstor-bench-{prefix}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_image(path: Path, size: int) -> None:
    """``size`` bytes that no compression or deduplication can shortcut: a 64 MiB random block,
    repeated with each repetition's 8-byte counter XORed into every 4 KiB page, so no two pages
    of the file are equal.  Fast (numpy-free) because only one word per page changes."""
    block = bytearray(os.urandom(64 * MIB))
    view = memoryview(block)
    pages = range(0, len(block), 4096)
    firsts = [int.from_bytes(view[p:p + 8], "little") for p in pages]
    written = 0
    with open(path, "wb") as fh:
        counter = 0
        while written < size:
            for p, first in zip(pages, firsts):
                view[p:p + 8] = (first ^ counter).to_bytes(8, "little")
            n = min(len(block), size - written)
            fh.write(view[:n])
            written += n
            counter += 1


def _kill_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextmanager
def nginx(root: Path) -> Iterator[str]:
    """nginx (Debian package) serving ``root`` on a free loopback port, as a non-daemon child with
    its own minimal config, logs and temp paths in a temp dir.  Yields the base URL."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(exe):
        raise SystemExit("nginx is not installed: apt-get install nginx")
    port = free_port()
    with temp_dir("nginx") as conf_dir:
        # As root, nginx's workers switch to "nobody", who could not read our 0700 temp dirs.
        user = "user root root;" if os.geteuid() == 0 else ""
        (conf_dir / "nginx.conf").write_text(f"""
{user}
daemon off;
worker_processes 2;
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {conf_dir}/body;
    proxy_temp_path {conf_dir}/proxy;
    fastcgi_temp_path {conf_dir}/fastcgi;
    uwsgi_temp_path {conf_dir}/uwsgi;
    scgi_temp_path {conf_dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /healthz {{ return 200 "ok"; }}
    }}
}}
""")
        proc = subprocess.Popen([exe, "-p", str(conf_dir), "-c", str(conf_dir / "nginx.conf")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=10)
            yield f"http://127.0.0.1:{port}"
        finally:
            _kill_group(proc)


# ---- secstor processes and API calls ----------------------------------------------------------

def secstor_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SECSTOR_DATABASE_URL": database_url, **extra}
    # After any PYTHONPATH given, so `PYTHONPATH=/old/tree python bench/...` measures that tree.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    return env


@dataclass
class Secstor:
    """A real ``secstor serve`` (``api=True``) or ``secstor worker`` child process."""

    home: Path
    database_url: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/client/api"

    @property
    def keys(self) -> dict[str, str]:
        return json.loads((self.home / "admin-keys.json").read_text())

    def serve(self, workers: int = 0) -> "Secstor":
        self._start(["serve", "--port", str(self.port), "--workers", str(workers)])
        wait_http(f"http://127.0.0.1:{self.port}/healthz", self.proc)
        return self

    def worker(self) -> "Secstor":
        return self._start(["worker"])

    def _start(self, command: list[str]) -> "Secstor":
        self.log = open(self.home.parent / f"{self.home.name}-{command[0]}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "secstor.cli.main", *command, "--home", str(self.home), *self.args],
            env=secstor_env(self.database_url, **self.env), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)
            self.proc = None
            self.log.close()


@contextmanager
def running(*processes: Secstor) -> Iterator[None]:
    try:
        yield
    finally:
        for p in processes:
            p.stop()


def api(client: httpx.Client, endpoint: str, keys: dict[str, str], command: str, /, **params: object) -> dict:
    """One signed API call; returns the response object (``<command>response``'s content)."""
    query = signed_params(command, {k: str(v) for k, v in params.items()}, keys["apikey"], keys["secretkey"])
    response = client.get(endpoint, params=query)
    body = response.json()
    answer = next(iter(body.values()))
    if response.status_code != 200:
        raise RuntimeError(f"{command} failed: {answer}")
    return answer


# ---- databases --------------------------------------------------------------------------------

@contextmanager
def fresh_database(kind: str, work: Path) -> Iterator[str]:
    """An empty database of ``kind`` (sqlite | postgresql | mysql), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{work / 'bench.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin_url = PG_ADMIN_URL if kind == "postgresql" else MYSQL_ADMIN_URL
    name = f"secstor_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    q = '"' if kind == "postgresql" else "`"
    with admin.connect() as conn:
        extra = "" if kind == "postgresql" else " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        conn.execute(text(f"CREATE DATABASE {q}{name}{q}{extra}"))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {q}{name}{q}{force}"))
        admin.dispose()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]
