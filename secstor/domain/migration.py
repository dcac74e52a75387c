"""Planning a migration between image stores: which object goes where (pure: no I/O).

``migrateSecondaryStorageData`` has two policies (cloudstack-facts.md §4):

* **Complete** drains the source: every object goes, largest first, to the destination with
  the most free bytes that stays at or under ``secondary.storage.capacity.threshold`` after the
  move. Unlike CloudStack, which stops at the first object that does not fit, the rest still
  moves and the plan lists what could not (success is then false: CloudStack #5654).
* **Balance** moves objects off the source, largest first, to the store with the most free
  bytes, each move only if it lowers the *imbalance* (population standard deviation of the
  stores' free/total ratios divided by their mean), until the imbalance is at or under
  ``image.store.imbalance.threshold``.

``plan_balance`` makes CloudStack's decisions, in CloudStack's order, but in O(1) per object
(running sums of the ratios and of their squares, instead of recomputing the metric over
every store twice per object) and stops as soon as the threshold is reached. It differs in
three ways, each of which can only lower the bytes moved: a move must strictly lower the
imbalance (CloudStack also makes moves that leave it unchanged); a destination must stay at
or under the capacity threshold *after* the move (CloudStack checks before, so it can fill a
store past it); and the move that ends the run is made with the smallest remaining object
that reaches the threshold, not with the largest (which often overshoots).
``cloudstack_reference_balance`` is the straight transcription of CloudStack's loop, kept as
the yardstick for the tests and for bench/planner.py.

Sizes are sizes on disk (CloudStack #5655 planned with virtual sizes); a snapshot chain is one
``MovableObject`` with the summed size of its snapshots, so it always moves whole to one store.
Messages are CloudStack's; the executor appends ". successful migrations: N" when it is done.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping, Sequence

KINDS = ("template", "snapshot_chain", "volume")

NO_VALID_DESTINATION = ("No destination valid store(s) available to migrate. Could be due to invalid store ID(s) "
                        "or store(s) are read-only. Terminating Migration of data")
MIGRATION_COMPLETED = "Migration completed"
SYSTEM_BALANCED = "Migration not required as system seems balanced"
COMPLETE_MIGRATION_FAILED = ("Complete migration failed. Please set the source Image store to read-write mode if "
                             "you want to continue using it")
BALANCE_SOURCE_FREEST = ("Seems like source datastore has more free capacity than the destination(s). "
                         "Image stores have been attempted to be balanced")


# CloudStack names the store by its internal id in these two; secstor by the name users know it by.
def no_files_message(store: Hashable) -> str:
    return f"No files in Image store {store} to migrate"


def source_freer_message(store: Hashable) -> str:
    # Marvin's test_05_migrate_to_less_free_space matches "has equal or more free space than destination".
    return (f"Files not completely migrated from {store}. Datastore (source): {store} has equal or more "
            "free space than destination. If you want to continue using the Image Store, please change the "
            "read-only status using 'update imagestore' command")


# A move must lower the imbalance by more than float noise to count as lowering it: the running
# sums and a fresh computation can disagree in the last bits.
_RELATIVE_EPSILON = 1e-12


@dataclass(frozen=True)
class StoreState:
    """One image store as the planner sees it. ``total_bytes``/``used_bytes`` are None until the
    capacity scan has measured the store."""

    id: Hashable
    total_bytes: int | None
    used_bytes: int | None
    readonly: bool = False
    role: str = "Image"
    zone_id: Hashable = None
    name: str | None = None  # what messages call the store (its id when not given)

    @property
    def label(self) -> Hashable:
        return self.name if self.name else self.id

    @property
    def measured(self) -> bool:
        return self.total_bytes is not None and self.used_bytes is not None and self.total_bytes > 0

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - self.used_bytes


@dataclass(frozen=True, slots=True)
class MovableObject:
    """What moves as one unit: a template, a volume, or a whole snapshot chain (``id`` is the
    chain's root, ``chain_ids`` every snapshot of it, ``size_on_disk`` their sum)."""

    id: Hashable
    kind: str
    size_on_disk: int
    store_id: Hashable
    chain_ids: tuple = ()


@dataclass(frozen=True, slots=True)
class Move:
    object_id: Hashable
    kind: str
    from_store: Hashable
    to_store: Hashable
    bytes: int


@dataclass
class Plan:
    moves: list[Move]
    imbalance_before: float
    imbalance_after: float
    message: str
    success: bool
    not_moved: list[tuple[MovableObject, str]] = field(default_factory=list)

    @property
    def bytes_moved(self) -> int:
        return sum(m.bytes for m in self.moves)

    def estimate_seconds(self, throughput_bytes_per_s: float) -> float:
        """How long the moves take at a measured copy throughput (the dry run shows it)."""
        if throughput_bytes_per_s <= 0:
            raise ValueError("throughput must be positive")
        return self.bytes_moved / throughput_bytes_per_s


def snapshot_chains(snapshots: Iterable[tuple[Hashable, Hashable | None, int]], store_id: Hashable
                    ) -> list[MovableObject]:
    """Group one store's snapshots, given as (id, parent id or None, size on disk), into chains.

    A snapshot whose parent is not in ``snapshots`` (none, or kept on another store) starts a
    chain; its descendants follow it, parents before children, as the copy must go.
    """
    parent_of: dict = {}
    size_of: dict = {}
    for snapshot_id, parent_id, size in snapshots:
        parent_of[snapshot_id] = parent_id
        size_of[snapshot_id] = size
    children: dict = {}
    for snapshot_id, parent_id in parent_of.items():
        children.setdefault(parent_id, []).append(snapshot_id)
    chains = []
    seen = 0
    for root in (s for s, p in parent_of.items() if p is None or p not in parent_of):
        members = [root]
        for member in members:  # breadth first: the list grows while we walk it
            members.extend(children.get(member, ()))
        seen += len(members)
        chains.append(MovableObject(root, "snapshot_chain", sum(size_of[m] for m in members), store_id,
                                    tuple(members)))
    if seen != len(parent_of):
        raise ValueError("snapshot parent links form a cycle")
    return chains


# ---- the metric ------------------------------------------------------------------------------

def _imbalance_of_ratios(ratios: Sequence[float]) -> float:
    """Population standard deviation / mean. With a mean of 0 every store is full, which is
    balanced (0.0) unless some store is over-full (free < 0): then there is no meaningful ratio
    and the stores count as maximally imbalanced (inf)."""
    if not ratios:
        return 0.0
    mean = sum(ratios) / len(ratios)
    deviation = math.sqrt(sum((r - mean) ** 2 for r in ratios) / len(ratios))
    if mean <= 0:
        return 0.0 if deviation == 0 else math.inf
    return deviation / mean


def imbalance(stores: Iterable[StoreState]) -> float:
    """CloudStack's imbalance metric over measured stores (see ``_imbalance_of_ratios``)."""
    return _imbalance_of_ratios([s.free_bytes / s.total_bytes for s in stores])


def _imbalance_of_sums(count: int, ratio_sum: float, square_sum: float) -> float:
    """The same metric from the running sums of the ratios and of their squares."""
    mean = ratio_sum / count
    variance = max(square_sum / count - mean * mean, 0.0)
    if mean <= 0:
        return 0.0 if variance <= 1e-24 else math.inf
    return math.sqrt(variance) / mean


# ---- destinations ----------------------------------------------------------------------------

def validate_destinations(src: StoreState, dests: Mapping[Hashable, StoreState | None]
                          ) -> tuple[list[StoreState], list[tuple[Hashable, str]]]:
    """Split the requested destinations (requested id -> store, None when no store has that id)
    into the usable ones and the skipped ones with the reason. Any provider is fine (CloudStack
    takes NFS only). Nothing usable: the caller answers ``NO_VALID_DESTINATION``."""
    valid, skipped = [], []
    for requested_id, store in dests.items():
        if store is None:
            reason = "no image store has this id"
        elif store.id == src.id:
            reason = "it is the source store"
        elif store.readonly:
            reason = "it is read-only"
        elif store.role != "Image":
            reason = f"its role is {store.role}, not Image"
        elif store.zone_id != src.zone_id:
            reason = "it is in another zone than the source"
        elif not store.measured:
            reason = "its capacity has not been measured yet"
        elif any(v.id == store.id for v in valid):
            reason = "it is listed twice"
        else:
            valid.append(store)
            continue
        skipped.append((requested_id, reason))
    return valid, skipped


def _room_under(total: int, used: int, capacity_threshold: float) -> int:
    """The most bytes a store can take and keep used/total at or under the threshold (negative
    when it is already over), exactly as ``used / total <= threshold`` decides it."""
    room = math.floor(capacity_threshold * total) - used
    while (used + room + 1) / total <= capacity_threshold:
        room += 1
    while (used + room) / total > capacity_threshold:
        room -= 1
    return min(room, total - used)


def _require_plannable(src: StoreState, dests: Sequence[StoreState]) -> None:
    if not dests:
        raise ValueError("no destination: answer NO_VALID_DESTINATION before planning")
    if not all(s.measured for s in (src, *dests)):
        raise ValueError("every store must be measured before planning")


def _largest_first(objects: Sequence[MovableObject]) -> tuple[list[int], int]:
    """Each object as one int, size in the high bits and position in the low bits, sorted largest
    first; equal sizes keep their given order (as a stable sort would). Sorting plain ints is
    several times faster than sorting objects by a key, which matters at a million objects."""
    shift = len(objects).bit_length()
    top = (1 << shift) - 1
    keys = [(o.size_on_disk << shift) | (top - i) for i, o in enumerate(objects)]
    keys.sort(reverse=True)
    return keys, shift


def _plan(stores: Sequence[StoreState], free: Sequence[int], moves: list[Move], before: float, message: str,
          success: bool, not_moved: list | None = None) -> Plan:
    after = _imbalance_of_ratios([f / s.total_bytes for f, s in zip(free, stores)])
    return Plan(moves, before, after, message, success, not_moved or [])


# ---- Complete --------------------------------------------------------------------------------

def plan_complete(src: StoreState, dests: Sequence[StoreState], objects: Sequence[MovableObject],
                  capacity_threshold: float) -> Plan:
    """Drain ``src`` (see the module docstring). ``dests`` come from ``validate_destinations``.

    Like CloudStack (Marvin's test_05), a source with at least as many free bytes as every
    destination is refused: nothing moves.
    """
    _require_plannable(src, dests)
    stores = [src, *dests]
    free = [s.free_bytes for s in stores]
    before = _imbalance_of_ratios([f / s.total_bytes for f, s in zip(free, stores)])
    if not objects:
        return _plan(stores, free, [], before, no_files_message(src.label), True)
    if free[0] >= max(free[1:]):
        reason = "the source has equal or more free space than every destination"
        return _plan(stores, free, [], before, source_freer_message(src.label), False, [(o, reason) for o in objects])

    room = [_room_under(s.total_bytes, s.used_bytes, capacity_threshold) for s in stores]
    keys, shift = _largest_first(objects)
    top = (1 << shift) - 1
    most_room = max(room[1:])
    by_free = [(-free[d], d) for d in range(1, len(stores))]  # freest first; first listed on a tie
    heapq.heapify(by_free)
    moves, not_moved = [], []
    for key in keys:
        size, obj = key >> shift, objects[top - (key & top)]
        if size > most_room:
            not_moved.append((obj, f"its {size} bytes fit on no destination at or under "
                                   f"secondary.storage.capacity.threshold ({capacity_threshold})"))
            continue
        # The freest store with room for it under the threshold (a big store can have the most
        # free bytes and still be too full by ratio).
        passed_over = []
        while room[by_free[0][1]] < size:
            passed_over.append(heapq.heappop(by_free))
        dest = by_free[0][1]
        free[0] += size
        free[dest] -= size
        room[dest] -= size
        heapq.heapreplace(by_free, (-free[dest], dest))
        for entry in passed_over:
            heapq.heappush(by_free, entry)
        if room[dest] + size == most_room:
            most_room = max(room[1:])
        moves.append(Move(obj.id, obj.kind, src.id, stores[dest].id, size))
    if not_moved:
        return _plan(stores, free, moves, before, COMPLETE_MIGRATION_FAILED, False, not_moved)
    return _plan(stores, free, moves, before, MIGRATION_COMPLETED, True)


# ---- Balance ---------------------------------------------------------------------------------

def plan_balance(src: StoreState, dests: Sequence[StoreState], objects: Sequence[MovableObject],
                 imbalance_threshold: float, capacity_threshold: float) -> Plan:
    """Balance ``src`` against ``dests`` (see the module docstring). Success is always true, as
    in CloudStack: Balance is best effort, and the plan's imbalance_after tells how far it got."""
    _require_plannable(src, dests)
    stores = [src, *dests]
    count = len(stores)
    free = [s.free_bytes for s in stores]
    inverse_total = [1.0 / s.total_bytes for s in stores]
    before = _imbalance_of_ratios([f / s.total_bytes for f, s in zip(free, stores)])
    if not objects:
        return _plan(stores, free, [], before, no_files_message(src.label), True)
    if before <= imbalance_threshold:
        return _plan(stores, free, [], before, SYSTEM_BALANCED, True)

    room = [_room_under(s.total_bytes, s.used_bytes, capacity_threshold) for s in stores]
    keys, shift = _largest_first(objects)
    top = (1 << shift) - 1
    ratios = [f * inv for f, inv in zip(free, inverse_total)]
    ratio_sum, square_sum = sum(ratios), sum(r * r for r in ratios)
    current = before
    src_inverse = inverse_total[0]
    freest = max(range(count), key=free.__getitem__)  # the first on a tie: the source wins it
    chosen: list[tuple[int, int, int]] = []  # (object position, destination, bytes)
    message = MIGRATION_COMPLETED
    position = 0
    while position < len(keys):
        if freest == 0:
            message = BALANCE_SOURCE_FREEST
            break
        key = keys[position]
        position += 1
        size = key >> shift
        if size > room[freest]:  # does not fit, or would push the store past the capacity threshold
            continue
        src_ratio, dest_ratio = free[0] * src_inverse, free[freest] * inverse_total[freest]
        src_after, dest_after = src_ratio + size * src_inverse, dest_ratio - size * inverse_total[freest]
        sum_after = ratio_sum - src_ratio - dest_ratio + src_after + dest_after
        squares_after = (square_sum - src_ratio * src_ratio - dest_ratio * dest_ratio
                         + src_after * src_after + dest_after * dest_after)
        after = _imbalance_of_sums(count, sum_after, squares_after)
        if not after < current * (1 - _RELATIVE_EPSILON):
            continue
        if after <= imbalance_threshold or dest_after < src_after:
            # This move reaches the threshold or overshoots the balance point: a smaller
            # remaining object may reach the threshold alone; if so, it ends the run.
            finisher = _smallest_finisher(keys, position - 1, shift, free, room, inverse_total, ratio_sum,
                                          square_sum, imbalance_threshold)
            if finisher is not None:
                finisher_key, dest = finisher
                finisher_size = finisher_key >> shift
                chosen.append((top - (finisher_key & top), dest, finisher_size))
                free[0] += finisher_size
                free[dest] -= finisher_size
                break
        chosen.append((top - (key & top), freest, size))
        free[0] += size
        free[freest] -= size
        room[freest] -= size
        ratio_sum, square_sum, current = sum_after, squares_after, after
        if current <= imbalance_threshold:
            break
        freest = max(range(count), key=free.__getitem__)
    moves = [Move(objects[i].id, objects[i].kind, src.id, stores[d].id, size) for i, d, size in chosen]
    return _plan(stores, free, moves, before, message, True)


def _smallest_finisher(keys: list[int], first: int, shift: int, free: list[int], room: list[int],
                       inverse_total: list[float], ratio_sum: float, square_sum: float,
                       threshold: float) -> tuple[int, int] | None:
    """The smallest remaining object (``keys[first:]``, largest first) whose move to some
    destination alone brings the imbalance to ``threshold`` or under, as (key, destination).

    Moving s bytes from the source (index 0) to d changes two ratios linearly in s, so
    "imbalance after <= threshold", i.e. count*sum(r^2) - (1+threshold^2)*sum(r)^2 <= 0, is a
    quadratic inequality in s: solve it, then binary-search the sorted sizes. s is measured in
    source totals (x = s / total_0) to keep the coefficients near 1.
    """
    count = len(free)
    k = 1.0 + threshold * threshold
    src_total = 1.0 / inverse_total[0]
    src_ratio = free[0] * inverse_total[0]
    size_of = (lambda key: -(key >> shift))  # keys are largest first: negated sizes ascend
    best: tuple[int, int] | None = None
    for dest in range(1, count):
        if room[dest] <= 0:
            continue
        dest_ratio = free[dest] * inverse_total[dest]
        per_x = src_total * inverse_total[dest]  # how much dest's ratio falls per unit of x
        a = count * (1.0 + per_x * per_x) - k * (1.0 - per_x) ** 2
        b = 2.0 * count * (src_ratio - per_x * dest_ratio) - 2.0 * k * ratio_sum * (1.0 - per_x)
        c = count * square_sum - k * ratio_sum * ratio_sum
        interval = _nonpositive_interval(a, b, c)
        if interval is None:
            continue
        low = max(1, math.ceil(interval[0] * src_total * (1 - 1e-9)))
        high = min(room[dest], interval[1] * src_total * (1 + 1e-9))
        for _ in range(3):  # rounding near a root: the next distinct sizes settle it
            if low > high:
                break
            j = bisect_right(keys, -low, lo=first, key=size_of) - 1  # the smallest size >= low
            if j < first:
                break
            size = keys[j] >> shift
            if size > high:
                break
            if _imbalance_after(size, dest, free, inverse_total, ratio_sum, square_sum) <= threshold:
                if best is None or size < best[0] >> shift:
                    best = (keys[j], dest)
                break
            low = size + 1
    return best


def _nonpositive_interval(a: float, b: float, c: float) -> tuple[float, float] | None:
    """Where a*x^2 + b*x + c <= 0 for x > 0, given c > 0 (the imbalance is above the threshold
    before the move): one interval, possibly unbounded, or None."""
    if abs(a) < 1e-12:
        return (-c / b, math.inf) if b < 0 else None
    discriminant = b * b - 4 * a * c
    if discriminant < 0:
        return None
    root = math.sqrt(discriminant)
    low, high = sorted(((-b - root) / (2 * a), (-b + root) / (2 * a)))
    if a < 0:  # c > 0 puts one root on each side of 0: the inequality holds past the positive one
        return high, math.inf
    return (low, high) if high > 0 else None


def _imbalance_after(size: int, dest: int, free: list[int], inverse_total: list[float], ratio_sum: float,
                     square_sum: float) -> float:
    src_ratio, dest_ratio = free[0] * inverse_total[0], free[dest] * inverse_total[dest]
    src_after, dest_after = src_ratio + size * inverse_total[0], dest_ratio - size * inverse_total[dest]
    return _imbalance_of_sums(len(free), ratio_sum - src_ratio - dest_ratio + src_after + dest_after,
                              square_sum - src_ratio ** 2 - dest_ratio ** 2 + src_after ** 2 + dest_after ** 2)


# ---- CloudStack's loop, the yardstick ----------------------------------------------------------

def cloudstack_reference_balance(src: StoreState, dests: Sequence[StoreState], objects: Sequence[MovableObject],
                                 imbalance_threshold: float, capacity_threshold: float) -> Plan:
    """CloudStack's ``StorageOrchestrator.migrateData`` for Balance, step by step, with sizes on
    disk (#5655 fixed). Capacities are the planner's snapshot: CloudStack re-reads the stats
    collector every step, which lags the copies; here each planned move counts at once, as if
    the stats were always fresh (CloudStack's best case). On a tie for the freest store the
    source wins, then the destinations in the given order."""
    _require_plannable(src, dests)
    stores = [src, *dests]
    free = [s.free_bytes for s in stores]

    def metric(capacities: list[int]) -> float:
        return _imbalance_of_ratios([f / s.total_bytes for f, s in zip(capacities, stores)])

    before = metric(free)
    files = sorted(objects, key=lambda o: o.size_on_disk, reverse=True)
    if not files:
        return _plan(stores, free, [], before, no_files_message(src.label), True)
    if before < imbalance_threshold:  # CloudStack: strictly below
        return _plan(stores, free, [], before, SYSTEM_BALANCED, True)
    moves = []
    position = 0
    while True:
        chosen = files[position] if position < len(files) else None  # files.remove(0)
        position += 1
        ordered = sorted(range(len(stores)), key=lambda i: -free[i])  # sortDataStores
        dest = ordered[0]
        if chosen is None or dest == 0:
            source_freest = dest == 0 and position < len(files)
            message = BALANCE_SOURCE_FREEST if source_freest else MIGRATION_COMPLETED
            break
        size = chosen.size_on_disk
        if size > free[dest]:
            continue
        current = metric(free)  # shouldMigrate
        proposed = list(free)
        proposed[0] += size
        proposed[dest] -= size
        if metric(proposed) > current:
            continue
        dest_used = stores[dest].total_bytes - free[dest]
        if current > imbalance_threshold and dest_used / stores[dest].total_bytes <= capacity_threshold:
            free = proposed
            moves.append(Move(chosen.id, chosen.kind, src.id, stores[dest].id, size))
    return _plan(stores, free, moves, before, message, True)
