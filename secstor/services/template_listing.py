"""Paging of listTemplates / listIsos without counting and skipping every (template, zone) pair twice.

CloudStack's answer needs the total number of pairs visible to the caller (``count``) and one
page of them. Counting and then skipping ``OFFSET`` pairs each walk the template ⨝ copy join:
with 100,000 templates that is two scans of 100,000 pairs per request. Instead, one scan reads
the template id of every pair in listing order (the count is its length), and the page is read
from the database starting at the page's first template id (an index range, whatever the page
number), so its items are always current.

Large listings (``SNAPSHOT_MIN_PAIRS`` pairs or more) keep that id list per query and caller
scope, re-read in the background once it is ``SNAPSHOT_SECONDS`` old: their ``count`` and the
place where a page starts may lag templates registered or deleted meanwhile by that much plus
one scan (CloudStack's count is not transactionally exact across pages either). Smaller
listings are always exact.
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict
from typing import Any, Callable, Hashable

from sqlalchemy import Select
from sqlalchemy.orm import Session

log = logging.getLogger("secstor.templates")

SNAPSHOT_MIN_PAIRS = 10_000
SNAPSHOT_SECONDS = 10.0  # age after which a snapshot is refreshed in the background
_SNAPSHOT_MAX_SECONDS = 60.0  # a snapshot this old is never used (the refresh failed or is stuck)
_MAX_SNAPSHOTS = 16  # one per (filter, caller scope) in use; 800 KB each at 100,000 pairs

_snapshots: OrderedDict[Hashable, tuple[float, array]] = OrderedDict()
_refreshing: set[Hashable] = set()
_lock = threading.Lock()


def _read_ids(connectable, stmt: Select) -> array:
    return array("q", (template_id for template_id, _zone in connectable.execute(stmt)))


def _keep(key: Hashable, taken: float, ids: array) -> None:
    with _lock:
        _snapshots[key] = (taken, ids)
        _snapshots.move_to_end(key)
        while len(_snapshots) > _MAX_SNAPSHOTS:
            _snapshots.popitem(last=False)


def _refresh(engine, stmt: Select, key: Hashable) -> None:
    """Re-read a snapshot on its own connection, so no request waits for the full scan."""
    try:
        taken = time.monotonic()
        with engine.connect() as conn:
            _keep(key, taken, _read_ids(conn, stmt))
    except Exception:  # the next request past _SNAPSHOT_MAX_SECONDS reads it itself
        log.exception("refreshing a template listing snapshot failed")
    finally:
        with _lock:
            _refreshing.discard(key)


def _pair_template_ids(session: Session, stmt: Select, key: Hashable) -> array:
    """The template id of every pair of ``stmt``, in listing order: kept a while if there are many."""
    now = time.monotonic()
    with _lock:
        kept = _snapshots.get(key)
        if kept is not None and now - kept[0] < _SNAPSHOT_MAX_SECONDS:
            _snapshots.move_to_end(key)
            if now - kept[0] >= SNAPSHOT_SECONDS and key not in _refreshing:
                _refreshing.add(key)
                threading.Thread(target=_refresh, args=(session.get_bind().engine, stmt, key), daemon=True,
                                 name="template-listing-snapshot").start()
            return kept[1]
    ids = _read_ids(session, stmt)
    if len(ids) >= SNAPSHOT_MIN_PAIRS:
        _keep(key, now, ids)
    return ids


def page_of_pairs(session: Session, pairs_select: Callable[[tuple[int, int] | None], Select], key: Hashable,
                  window: tuple[int, int] | None) -> tuple[list[tuple[int, Any]], int]:
    """One page (``window`` = (offset, size), None for all) of the (template id, zone id) pairs
    that ``pairs_select(template id range or None)`` selects in (template id, zone id) order, and
    the total number of pairs. ``key`` names the query and the caller's scope (what decides
    which pairs are visible)."""
    if window is None:
        pairs = [(t, z) for t, z in session.execute(pairs_select(None))]
        return pairs, len(pairs)
    offset, size = window
    ids = _pair_template_ids(session, pairs_select(None), (str(session.get_bind().url), key))
    if offset >= len(ids):
        return [], len(ids)
    first, last = ids[offset], ids[min(offset + size, len(ids)) - 1]
    # Read only the page's templates (an index range), skipping the first template's pairs (its
    # other zones) that belong to the previous page.
    skip = offset - bisect_left(ids, first)
    rows = session.execute(pairs_select((first, last)).offset(skip or None).limit(size))
    return [(t, z) for t, z in rows], len(ids)
