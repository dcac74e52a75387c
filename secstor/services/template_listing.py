"""Paging of listTemplates / listIsos without counting and skipping every (template, zone) pair twice.

CloudStack's answer needs the total number of pairs visible to the caller (``count``) and one
page of them. Counting and then skipping ``OFFSET`` pairs each walk the template ⨝ copy join:
with 100,000 templates that is two scans of 100,000 pairs per request. Instead, one query
counts the pairs per bucket of BUCKET_IDS consecutive template ids, in the database: the total
is their sum, and a page is read from the start of the bucket holding its first pair (an index
range of template ids, whatever the page number, skipping only that bucket's earlier pairs), so
its items are always current.

Large listings (``SNAPSHOT_MIN_PAIRS`` pairs or more) keep their bucket counts per query and
caller scope, re-read in the background once they are ``SNAPSHOT_SECONDS`` old: their ``count``
and the place where a page starts may lag templates registered or deleted meanwhile by that
much plus one scan (CloudStack's count is not transactionally exact across pages either).
Smaller listings are exact on every request. The scan sends one row per bucket, not one per
pair, so the background refresh hardly holds the GIL that requests need (decoding 100,000 rows
with PyMySQL held it for a second).
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from itertools import accumulate
from typing import Callable, Hashable

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

log = logging.getLogger("secstor.templates")

BUCKET_IDS = 128  # a page reads at most one bucket's pairs (128 templates × their zones) more than it shows
SNAPSHOT_MIN_PAIRS = 10_000
SNAPSHOT_SECONDS = 10.0  # age after which a snapshot is refreshed in the background
_SNAPSHOT_MAX_SECONDS = 60.0  # a snapshot this old is never used (the refresh failed or is stuck)
_MAX_SNAPSHOTS = 16  # one per (filter, caller scope) in use; about 800 buckets each at 100,000 templates

# pairs_select((first, last) template ids or None): the (template_id, zone_id) pairs of the
# templates in that id range, in listing order.
PairsSelect = Callable[[tuple[int, int] | None], Select]


@dataclass(frozen=True)
class _Buckets:
    taken: float  # time.monotonic() when read
    buckets: list[int]  # the buckets (template id // BUCKET_IDS) holding pairs, ascending
    before: list[int]  # pairs in the buckets before each one; one more entry: the total

    @property
    def total(self) -> int:
        return self.before[-1]

    def window(self, offset: int, size: int) -> tuple[tuple[int, int], int]:
        """(first, last) template ids to read a page from, and how many of their pairs to skip."""
        first = bisect_right(self.before, offset) - 1  # the bucket holding pair number ``offset``
        last = bisect_right(self.before, min(offset + size, self.total) - 1) - 1
        ids = (self.buckets[first] * BUCKET_IDS, (self.buckets[last] + 1) * BUCKET_IDS - 1)
        return ids, offset - self.before[first]


_snapshots: OrderedDict[Hashable, _Buckets] = OrderedDict()
_refreshing: set[Hashable] = set()
_lock = threading.Lock()


def _buckets_select(pairs_select: PairsSelect) -> Select:
    listed = pairs_select(None).order_by(None).subquery("pairs")
    numbered = select((listed.c.template_id // BUCKET_IDS).label("bucket")).subquery("numbered")
    return select(numbered.c.bucket, func.count()).group_by(numbered.c.bucket).order_by(numbered.c.bucket)


def _read_buckets(connectable, stmt: Select) -> _Buckets:
    taken = time.monotonic()
    rows = connectable.execute(stmt).all()
    return _Buckets(taken, [bucket for bucket, _ in rows], list(accumulate((n for _, n in rows), initial=0)))


def _keep(key: Hashable, buckets: _Buckets) -> None:
    with _lock:
        _snapshots[key] = buckets
        _snapshots.move_to_end(key)
        while len(_snapshots) > _MAX_SNAPSHOTS:
            _snapshots.popitem(last=False)


def _refresh(engine, stmt: Select, key: Hashable) -> None:
    """Re-read a snapshot on its own connection, so no request waits for the full scan."""
    try:
        with engine.connect() as conn:
            _keep(key, _read_buckets(conn, stmt))
    except Exception:  # the next request past _SNAPSHOT_MAX_SECONDS reads it itself
        log.exception("refreshing a template listing snapshot failed")
    finally:
        with _lock:
            _refreshing.discard(key)


def _buckets(session: Session, pairs_select: PairsSelect, key: Hashable) -> _Buckets:
    """The bucket counts of the pairs: kept a while if there are many (the statement is built
    only when read: that cost a page 1-2 ms)."""
    now = time.monotonic()
    with _lock:
        kept = _snapshots.get(key)
        if kept is not None and now - kept.taken < _SNAPSHOT_MAX_SECONDS:
            _snapshots.move_to_end(key)
            if now - kept.taken >= SNAPSHOT_SECONDS and key not in _refreshing:
                _refreshing.add(key)
                stmt = _buckets_select(pairs_select)
                threading.Thread(target=_refresh, args=(session.get_bind().engine, stmt, key), daemon=True,
                                 name="template-listing-snapshot").start()
            return kept
    buckets = _read_buckets(session, _buckets_select(pairs_select))
    if buckets.total >= SNAPSHOT_MIN_PAIRS:
        _keep(key, buckets)
    return buckets


def page_of_pairs(session: Session, pairs_select: PairsSelect, key: Hashable,
                  window: tuple[int, int] | None) -> tuple[list[tuple[int, int]], int]:
    """One page (``window`` = (offset, size), None for all) of the (template id, zone id) pairs
    that ``pairs_select`` selects, and the total number of pairs. ``key`` names the query and
    the caller's scope (what decides which pairs are visible)."""
    if window is None:
        pairs = [(t, z) for t, z in session.execute(pairs_select(None))]
        return pairs, len(pairs)
    offset, size = window
    buckets = _buckets(session, pairs_select, (str(session.get_bind().url), key))
    if offset >= buckets.total:
        return [], buckets.total
    template_ids, skip = buckets.window(offset, size)
    rows = session.execute(pairs_select(template_ids).offset(skip or None).limit(size))
    return [(t, z) for t, z in rows.all()], buckets.total
