"""Balance planner: secstor's plan_balance against a straight transcription of CloudStack's loop.

    python bench/planner.py [--objects 1000000] [--seed 42] [--runs 3]

The input is seeded, so every run plans the same thing: one source store, 92 % full, holding
the objects (many small snapshot chains, fewer volumes, a few large templates; log-normal sizes
on disk), and 9 destinations of different sizes and fills, one of them a newly added empty
store. Both planners get the same input; only the planning is timed (building the input is
not). secstor's time is the median of ``--runs``; CloudStack's loop runs once (it is slow).
Both plans are checked: no object moves twice; stores filled past the capacity threshold are listed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from common import GIB, MIB, machine, markdown_table

from secstor.domain.migration import (MovableObject, Plan, StoreState, cloudstack_reference_balance,
                                      plan_balance)

IMBALANCE_THRESHOLD = 0.3  # image.store.imbalance.threshold default
CAPACITY_THRESHOLD = 0.9  # secondary.storage.capacity.threshold default
# (share of the objects, kind, median size on disk, log-normal sigma)
POPULATION = [(0.85, "snapshot_chain", 128 * MIB, 1.2), (0.12, "volume", 4 * GIB, 1.0),
              (0.03, "template", 8 * GIB, 0.8)]
# Destinations: (total as a multiple of the source's total, used fraction).
DESTINATIONS = [(1.0, 0.02), (0.5, 0.35), (1.0, 0.45), (2.0, 0.5), (0.25, 0.55), (1.5, 0.6), (0.75, 0.4),
                (1.0, 0.5), (1.0, 0.3)]
SOURCE_FILL = 0.92


def scenario(count: int, seed: int) -> tuple[StoreState, list[StoreState], list[MovableObject]]:
    rng = random.Random(seed)
    kinds = rng.choices([p[1:] for p in POPULATION], weights=[p[0] for p in POPULATION], k=count)
    objects = [MovableObject(i, kind, max(1, int(rng.lognormvariate(0, sigma) * median)), 0)
               for i, (kind, median, sigma) in enumerate(kinds)]
    used = sum(o.size_on_disk for o in objects)
    total = int(used / SOURCE_FILL)
    src = StoreState(0, total, used, zone_id=1)
    dests = [StoreState(i + 1, int(total * scale), int(total * scale * fill), zone_id=1)
             for i, (scale, fill) in enumerate(DESTINATIONS)]
    return src, dests, objects


def over_capacity(plan: Plan, src: StoreState, dests: list[StoreState]) -> list:
    """The destinations the plan fills past the capacity threshold (CloudStack's loop checks
    before a move, so it can); also refuses a plan that moves an object twice."""
    assert len({m.object_id for m in plan.moves}) == len(plan.moves), "an object moved twice"
    used = {s.id: s.used_bytes for s in (src, *dests)}
    for m in plan.moves:
        used[m.from_store] -= m.bytes
        used[m.to_store] += m.bytes
    return [s.id for s in dests if used[s.id] / s.total_bytes > CAPACITY_THRESHOLD]


def timed(planner, *args) -> tuple[float, Plan]:
    start = time.perf_counter()
    plan = planner(*args)
    return time.perf_counter() - start, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    src, dests, objects = scenario(args.objects, args.seed)
    inputs = (src, dests, objects, IMBALANCE_THRESHOLD, CAPACITY_THRESHOLD)
    ours = [timed(plan_balance, *inputs) for _ in range(args.runs)]
    ours_time, ours_plan = statistics.median(t for t, _ in ours), ours[0][1]
    reference_time, reference_plan = timed(cloudstack_reference_balance, *inputs)

    tib = float(1 << 40)
    print(f"{args.objects:,} objects ({sum(o.size_on_disk for o in objects) / tib:.1f} TiB) on the source, "
          f"{len(dests)} destinations; imbalance before {ours_plan.imbalance_before:.3f}, "
          f"threshold {IMBALANCE_THRESHOLD}; {machine()}\n")
    rows = []
    for name, seconds, plan in (("secstor plan_balance", ours_time, ours_plan),
                                ("CloudStack's loop", reference_time, reference_plan)):
        rows.append([name, f"{seconds:.3f} s", f"{plan.bytes_moved / tib:.2f} TiB", f"{len(plan.moves):,}",
                     f"{plan.imbalance_after:.4f}", ", ".join(map(str, over_capacity(plan, src, dests))) or "none"])
    print(markdown_table(["planner", "plan time", "bytes moved", "moves", "imbalance after",
                          "stores past the capacity threshold"], rows))
    print(f"\nspeed-up: {reference_time / ours_time:.0f}x; bytes moved: "
          f"{ours_plan.bytes_moved / reference_plan.bytes_moved:.3f} of CloudStack's")


if __name__ == "__main__":
    main()
