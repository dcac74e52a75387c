"""Placement of new data and capacity arithmetic (secstor.domain.capacity): pure functions."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from secstor.domain.capacity import (
    capacity_over_threshold,
    eligible_for_new_data,
    percent_used,
    stores_for_new_data,
)

pytestmark = pytest.mark.nodb

GiB = 1 << 30


@dataclass(frozen=True)
class Store:
    name: str
    total_bytes: int | None = 100 * GiB
    used_bytes: int | None = 10 * GiB
    readonly: bool = False
    role: str = "Image"


@pytest.mark.parametrize("store,eligible", [
    (Store("fresh", total_bytes=None, used_bytes=None), True),  # not scanned yet
    (Store("light"), True),
    (Store("at-threshold", used_bytes=90 * GiB), True),  # used/total <= threshold
    (Store("over", used_bytes=90 * GiB + 1), False),
    (Store("readonly", readonly=True), False),
    (Store("cache", role="ImageCache"), False),
    (Store("zero-size", total_bytes=0, used_bytes=0), False),
])
def test_eligible_for_new_data(store, eligible):
    assert eligible_for_new_data(store, 0.90) is eligible


STORES = [
    Store("a", used_bytes=50 * GiB),  # 50 free
    Store("b", total_bytes=200 * GiB, used_bytes=20 * GiB),  # 180 free
    Store("new", total_bytes=None, used_bytes=None),
    Store("c", used_bytes=10 * GiB),  # 90 free
    Store("ro", total_bytes=1000 * GiB, used_bytes=0, readonly=True),  # the freest, but read-only
    Store("full", total_bytes=100 * GiB, used_bytes=95 * GiB),
]


def test_first_fit_least_consumed_puts_most_free_first_and_unscanned_last():
    order = stores_for_new_data(STORES, "firstfitleastconsumed", 0.90)
    assert [s.name for s in order] == ["b", "c", "a", "new"]


def test_random_shuffles_only_eligible_stores():
    seen = set()
    for seed in range(40):
        order = stores_for_new_data(STORES, "random", 0.90, random.Random(seed))
        assert sorted(s.name for s in order) == ["a", "b", "c", "new"]
        seen.add(tuple(s.name for s in order))
    assert len(seen) > 1  # it really shuffles
    assert stores_for_new_data(STORES, "random", 0.90, random.Random(7)) == \
        stores_for_new_data(STORES, "random", 0.90, random.Random(7))


def test_read_only_and_full_stores_never_receive_new_data_whatever_the_threshold():
    assert stores_for_new_data([STORES[4], STORES[5]], "firstfitleastconsumed", 0.90) == []
    assert [s.name for s in stores_for_new_data(STORES, "firstfitleastconsumed", 0.99)][-2:] == ["full", "new"]
    assert "ro" not in [s.name for s in stores_for_new_data(STORES, "random", 1.0)]


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="image.store.allocation.algorithm"):
        stores_for_new_data(STORES, "roundrobin", 0.9)


@pytest.mark.parametrize("total,used,text", [
    (3, 1, "33.33"), (8, 1, "12.5"), (2, 1, "50"), (100, 0, "0"), (0, 0, "0"), (200, 201, "100.5"),
    (100_000, 12_346, "12.35"), (1_000_000, 5, "0"),
])
def test_percent_used_formats_like_cloudstack(total, used, text):
    assert percent_used(total, used) == text


def test_alert_threshold_is_strictly_passed():
    assert not capacity_over_threshold(100, 85, 0.85)
    assert capacity_over_threshold(100, 86, 0.85)
    assert not capacity_over_threshold(None, None, 0.85)
