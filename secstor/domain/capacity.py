"""Capacity arithmetic and the choice of image stores for new data (pure: no I/O).

``stores_for_new_data`` implements ``image.store.allocation.algorithm`` the way CloudStack's
ImageStoreProviderManagerImpl does, with one deliberate fix: read-only stores and stores above
``secondary.storage.capacity.threshold`` never receive new data, whatever the algorithm
(CloudStack's ``random`` skipped the capacity check, and read-only stores still received
template downloads: apache/cloudstack PR #13023).
"""

from __future__ import annotations

import random
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol, Sequence, TypeVar

ALGORITHMS = ("firstfitleastconsumed", "random")

# CloudStack's capacity type of secondary storage (listCapacity type=6) and its alert types.
CAPACITY_TYPE_SECONDARY_STORAGE = 6
ALERT_TYPE_SECONDARY_STORAGE = 6
ALERT_TYPE_STORAGE_MISC = 12
ALERT_NAMES = {ALERT_TYPE_SECONDARY_STORAGE: "ALERT.STORAGE.SECONDARY", ALERT_TYPE_STORAGE_MISC: "ALERT.STORAGE.MISC"}


class StoreFields(Protocol):
    """What placement needs to know about a store (an ImageStore row qualifies)."""

    readonly: bool
    role: str
    total_bytes: int | None
    used_bytes: int | None


S = TypeVar("S", bound=StoreFields)


def used_ratio(total_bytes: int | None, used_bytes: int | None) -> float | None:
    """used/total, or None while the store has not been measured. A zero total counts as full."""
    if total_bytes is None or used_bytes is None:
        return None
    return used_bytes / total_bytes if total_bytes > 0 else 1.0


def free_bytes(store: StoreFields) -> int | None:
    if store.total_bytes is None or store.used_bytes is None:
        return None
    return max(store.total_bytes - store.used_bytes, 0)


def eligible_for_new_data(store: StoreFields, threshold: float) -> bool:
    """May new data (a download, an upload, a snapshot backup, a migration target) go here?

    Not read-only, role Image (an ImageCache store is staging, not a home), and used/total at
    or under ``threshold``. A store not scanned yet is eligible, as in CloudStack's
    ``imageStoreHasEnoughCapacity``: the first scan follows within one interval.
    """
    if store.readonly or store.role != "Image":
        return False
    ratio = used_ratio(store.total_bytes, store.used_bytes)
    return ratio is None or ratio <= threshold


def stores_for_new_data(stores: Sequence[S], algorithm: str, threshold: float,
                        rng: random.Random | None = None) -> list[S]:
    """The eligible stores in the order they should be tried.

    ``firstfitleastconsumed``: most free bytes first; stores not measured yet come last (their
    free space is unknown), in their given order. ``random``: a shuffle (``rng`` makes it
    reproducible in tests).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown image.store.allocation.algorithm {algorithm!r}")
    eligible = [s for s in stores if eligible_for_new_data(s, threshold)]
    if algorithm == "random":
        (rng or random.Random()).shuffle(eligible)
        return eligible
    measured = [s for s in eligible if free_bytes(s) is not None]
    unmeasured = [s for s in eligible if free_bytes(s) is None]
    return sorted(measured, key=lambda s: -free_bytes(s)) + unmeasured  # sorted() is stable


def capacity_over_threshold(total_bytes: int | None, used_bytes: int | None, threshold: float) -> bool:
    """True once used/total passes (is strictly above) ``threshold``."""
    ratio = used_ratio(total_bytes, used_bytes)
    return ratio is not None and ratio > threshold


def percent_used(total_bytes: int, used_bytes: int) -> str:
    """CloudStack's ``percentused``: Java DecimalFormat("##.##") of used/total*100, i.e. at most
    two decimals, no trailing zeros, half-even rounding ("12.5", "33.33", "0")."""
    if total_bytes <= 0:
        return "0"
    value = (Decimal(used_bytes) * 100 / Decimal(total_bytes)).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    text = format(value, "f").rstrip("0").rstrip(".")
    return text or "0"
