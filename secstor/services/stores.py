"""Store drivers for image store rows, built once per process and rebuilt when a row changes."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from secstor.db.models import ImageStore

if TYPE_CHECKING:
    from secstor.runtime import Runtime
    from secstor.stores.base import StoreDriver
    from secstor.stores.nfs import NfsMounter


def store_details(runtime: "Runtime", store: ImageStore) -> dict[str, str]:
    """Non-secret details merged with decrypted secrets: what a driver needs, never shown."""
    details = json.loads(store.details_json or "{}")
    details.update(runtime.secrets.decrypt_json(store.secrets_enc))
    return details


class StoreDrivers:
    def __init__(self, runtime: "Runtime"):
        self._rt = runtime
        self._lock = threading.Lock()
        # store id -> (fingerprint of the row's driver-relevant fields, driver)
        self._cache: dict[int, tuple[tuple, "StoreDriver"]] = {}
        self._mounter: "NfsMounter | None" = None

    @property
    def mounter(self) -> "NfsMounter":
        from secstor.stores.nfs import NfsMounter, NfsOptions

        if self._mounter is None:
            cfg = self._rt.config
            settings = self._rt.settings
            opts = NfsOptions(
                version=str(settings.get("secstorage.nfs.version")),
                timeo=int(settings.get("secstorage.nfs.timeo")),
                retrans=int(settings.get("secstorage.nfs.retrans")),
                mount_command=cfg.mount_command,
            )
            self._mounter = NfsMounter(cfg.resolved_nfs_mount_root, opts,
                                       {url: Path(p) for url, p in cfg.nfs_mounts.items()})
        return self._mounter

    def for_store(self, store: ImageStore) -> "StoreDriver":
        """The driver for a store row; editing the row (credentials, endpoint) takes effect on the
        next call, without a restart."""
        from secstor.stores.factory import driver_for

        fingerprint = (store.provider, store.url, store.details_json, store.secrets_enc)
        with self._lock:
            cached = self._cache.get(store.id)
            if cached and cached[0] == fingerprint:
                return cached[1]
        driver = driver_for(store.provider, store.url, store_details(self._rt, store), mounter=self.mounter)
        with self._lock:
            old = self._cache.get(store.id)
            self._cache[store.id] = (fingerprint, driver)
        if old and old[1] is not driver:
            old[1].close()
        return driver

    def forget(self, store_id: int) -> None:
        with self._lock:
            old = self._cache.pop(store_id, None)
        if old:
            old[1].close()

    def close(self) -> None:
        with self._lock:
            drivers = [d for _, d in self._cache.values()]
            self._cache.clear()
        for d in drivers:
            d.close()
