"""listTemplates latency with many templates: a real `secstor serve` on a fresh database.

    python bench/list_templates.py [--templates 100000] [--stores 3] [--db sqlite,postgresql,mysql]
                                   [--runs 3] [--requests 200] [--warmup 20]

For each database: create it (SQLite file in a temp dir; PostgreSQL/MariaDB database created and
dropped here, admin URLs from SECSTOR_BENCH_PG_URL / SECSTOR_BENCH_MYSQL_URL), let `secstor serve
--workers 0` bootstrap it (admin, zone1, store "default"), add stores up to --stores in zone1, then
bulk-insert --templates templates with one Ready copy on every store (SQLAlchemy Core, batches).
Then a steady stream of signed `listTemplates templatefilter=all pagesize=500` calls as the admin,
one at a time as a UI or script would send them: --warmup calls first (not counted: the first
ones load code and read the listing), then --runs runs of --requests calls, page 1 a tenth of
the time and pages spread over the whole range otherwise; each answer is checked (500 items,
the right total). Prints median, p99 (nearest rank) and max per run and over all runs, the
server process's CPU time per call and the machine's load average during each run (other work
on the machine slows every figure: say so).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
from common import Secstor, fresh_database, machine, markdown_table, percentile, running, temp_dir
from sqlalchemy import create_engine, func, insert, select

from secstor.db.models import Account, ImageStore, TemplateStoreRef, VMTemplate, Zone
from secstor.security.signing import signed_params

BATCH = 10_000
GOAL_P99_MS = 100.0


def populate(database_url: str, home: Path, templates: int, stores: int) -> None:
    """Stores up to ``stores`` in zone1, then ``templates`` Ready templates with a copy on each."""
    engine = create_engine(database_url)
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        zone_id = conn.scalar(select(Zone.id).where(Zone.name == "zone1"))
        account_id = conn.scalar(select(Account.id).where(Account.name == "admin"))
        have = conn.scalar(select(func.count()).select_from(ImageStore)) or 0
        for n in range(have, stores):
            path = home / "stores" / f"bench-{n}"
            path.mkdir(parents=True, exist_ok=True)
            conn.execute(insert(ImageStore), [dict(name=f"bench-{n}", zone_id=zone_id, provider="Local",
                                                   protocol="file", url=f"file://{path}", created=now)])
        store_ids = list(conn.scalars(select(ImageStore.id).order_by(ImageStore.id)))[:stores]
    first_id = 1_000_000  # explicit ids, so copies can name their template without reading it back
    for start in range(0, templates, BATCH):
        ids = range(first_id + start, first_id + min(start + BATCH, templates))
        with engine.begin() as conn:
            conn.execute(insert(VMTemplate), [dict(
                id=i, uuid=str(uuid.uuid4()), created=now, name=f"bench-template-{i}",
                displaytext=f"benchmark template {i}", format="QCOW2", hypervisor="KVM", account_id=account_id,
                is_public=i % 3 == 0, featured=i % 30 == 0, template_type="USER", is_iso=False,
                url=f"http://example.com/images/{i}.qcow2", checksum_computed="{SHA-512}" + "ab" * 64,
                sha256="cd" * 32, size=10 << 30, physical_size=1 << 30, state="Active",
            ) for i in ids])
            conn.execute(insert(TemplateStoreRef), [dict(
                template_id=i, store_id=s, zone_id=zone_id, state="Ready", download_state="DOWNLOADED",
                download_pct=100, install_path=f"template/tmpl/2/{i}/{i}.qcow2", size=10 << 30,
                physical_size=1 << 30, checksum="{SHA-512}" + "ab" * 64, created=now,
            ) for i in ids for s in store_ids])
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")  # what autovacuum does soon after a bulk load
    elif engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def server_cpu_ms(server: Secstor) -> float:
    """CPU time (user + system) the server process has used so far, in ms."""
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def measure(client: httpx.Client, server: Secstor, pages: list[int], pagesize: int, templates: int) -> list[float]:
    keys = server.keys
    latencies = []
    for page in pages:
        params = signed_params("listTemplates", {"templatefilter": "all", "pagesize": str(pagesize),
                                                 "page": str(page)}, keys["apikey"], keys["secretkey"])
        start = time.perf_counter()
        response = client.get(server.api_url, params=params)
        elapsed = time.perf_counter() - start
        body = response.json()["listtemplatesresponse"]
        expected = min(pagesize, templates - (page - 1) * pagesize)
        if response.status_code != 200 or body["count"] != templates or len(body["template"]) != expected:
            raise SystemExit(f"unexpected answer for page {page}: {str(body)[:300]}")
        latencies.append(elapsed * 1000)
    return latencies


def summary(kind: str, run: str, ms: list[float], cpu_ms: float, load: str) -> list[object]:
    p99 = percentile(ms, 99)
    return [kind, run, len(ms), f"{statistics.median(ms):.1f}", f"{p99:.1f}", f"{max(ms):.1f}",
            f"{cpu_ms / len(ms):.1f}", load, "yes" if p99 < GOAL_P99_MS else "**no**"]


def run(kind: str, args) -> list[list[object]]:
    pages = -(-args.templates // args.pagesize)
    rng = random.Random(42)
    with temp_dir(f"list-{kind}") as work, fresh_database(kind, work) as url:
        server = Secstor(home=work / "home", database_url=url)
        with running(server):
            server.serve(workers=0)
            start = time.monotonic()
            populate(url, server.home, args.templates, args.stores)
            loaded = time.monotonic() - start
            print(f"{kind}: inserted {args.templates} templates × {args.stores} stores in {loaded:.0f} s", flush=True)
            rows, everything, cpu_total = [], [], 0.0
            with httpx.Client(timeout=60) as client:
                warmup = [1, pages, pages // 2] + [rng.randint(1, pages) for _ in range(max(0, args.warmup - 3))]
                measure(client, server, warmup[:args.warmup], args.pagesize, args.templates)
                for n in range(args.runs):
                    # Page 1 (what a UI shows first) a tenth of the time, the rest spread over all pages.
                    wanted = [1 if i % 10 == 0 else rng.randint(1, pages) for i in range(args.requests)]
                    cpu_before = server_cpu_ms(server)
                    ms = measure(client, server, wanted, args.pagesize, args.templates)
                    cpu = server_cpu_ms(server) - cpu_before
                    rows.append(summary(kind, str(n + 1), ms, cpu, f"{os.getloadavg()[0]:.1f}"))
                    print("  " + " | ".join(map(str, rows[-1])), flush=True)
                    everything += ms
                    cpu_total += cpu
    if args.runs > 1:
        loads = [float(r[7]) for r in rows]
        rows.append(summary(kind, "all", everything, cpu_total, f"{min(loads):.1f}–{max(loads):.1f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=100_000)
    parser.add_argument("--stores", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="measured runs per database (default 3)")
    parser.add_argument("--requests", type=int, default=200, help="calls per run (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="calls before the first run, not counted (default 20)")
    parser.add_argument("--pagesize", type=int, default=500)
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql, mysql")
    args = parser.parse_args()
    rows = [row for kind in args.db.split(",") for row in run(kind.strip(), args)]
    print()
    print(f"listTemplates templatefilter=all pagesize={args.pagesize}, {args.templates} templates × "
          f"{args.stores} stores ({args.templates * args.stores} copies), {args.warmup} warm-up calls then "
          f"{args.runs} × {args.requests} calls; {machine()}")
    print()
    print(markdown_table(["database", "run", "requests", "median ms", "p99 ms", "max ms", "server CPU ms/call",
                          "load (1 min)", f"p99 < {GOAL_P99_MS:.0f} ms"], rows))


if __name__ == "__main__":
    main()
