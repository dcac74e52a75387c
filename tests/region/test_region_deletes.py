"""Deleting templates that have a region copy: a zone's deletion removes that zone's copies and keeps
the region copy the other zones use; a deletion while the region store is offline is completed
once it is back (the periodic retry's function called directly)."""

from __future__ import annotations

import logging
import socket
import threading
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from secstor.db.models import AsyncJob, ImageStore, PendingStoreDeletion
from secstor.services import region_sync
from secstor.services.staging import retry_pending_deletions
from tests.region.test_cleanup_everywhere import store_objects
from tests.region.test_region_sync import (
    HELD, WorkerKilled, join_region, preexisting, ready_in, region_copies, sync_pass_state,
)
from tests.region.test_staging_pull import extract, ready_everywhere, staged
from tests.support.moto import free_port
from tests.templates.conftest import wait_for

pytestmark = pytest.mark.usefixtures("loopback_allowed")


def under(region, directory: str) -> list[str]:
    return [k for k in region.objects() if k.startswith(directory)]


def directory_of(copy) -> str:
    return copy.install_path.rsplit("/", 1)[0] + "/"


def listed(cs, template: dict) -> list[dict]:
    return cs.listTemplates(templatefilter="self", id=template["id"]).get("template", [])


def test_a_zone_delete_keeps_the_region_copy_the_other_zones_use(quick_cs, runtime, region, legacy_zone, serve, images,
                                                                 unique_name, tmp_path):
    template = preexisting(quick_cs, region, legacy_zone, serve(images["qcow2"]), unique_name)
    join_region(quick_cs, legacy_zone, tmp_path)
    zone2 = region.zones[1]
    wait_for(lambda: ready_in(quick_cs, template, zone2))
    (copy,) = region_copies(runtime, template["id"])
    directory = directory_of(copy)
    before = set(staged(region, 1))
    extract(quick_cs, template["id"], zone2)
    (pulled,) = set(staged(region, 1)) - before
    (zone_file,) = legacy_zone.path.rglob("*.qcow2")

    # Zone 2's deletion removes its staging copy; the template stays available there (and in
    # every zone) through the region copy.
    quick_cs.deleteTemplate(id=template["id"], zoneid=zone2["id"], fetch_result=True)
    assert not pulled.exists() and zone_file.exists() and under(region, directory)
    assert [d["datastore"] for d in ready_in(quick_cs, template, zone2)["downloaddetails"]] == [region.store["name"]]
    # The legacy zone's deletion removes the copy on its own store.
    quick_cs.deleteTemplate(id=template["id"], zoneid=legacy_zone.zone["id"], fetch_result=True)
    assert not zone_file.exists() and under(region, directory)
    in_legacy = ready_in(quick_cs, template, legacy_zone.zone)
    assert [d["datastore"] for d in in_legacy["downloaddetails"]] == [region.store["name"]]
    # A deletion without a zone removes everything.
    quick_cs.deleteTemplate(id=template["id"], fetch_result=True)
    assert listed(quick_cs, template) == [] and under(region, directory) == []


def test_deleting_the_zone_of_the_only_copy_drops_an_unfinished_region_copy(quick_cs, runtime, region, legacy_zone,
                                                                           serve, images, unique_name, tmp_path):
    template = preexisting(quick_cs, region, legacy_zone, serve(images["qcow2"]), unique_name, keep_readonly=True)
    staging = join_region(quick_cs, legacy_zone, tmp_path)
    wait_for(lambda: sync_pass_state(runtime, staging) == "succeeded")
    with runtime.session() as s:  # writable again, and its upload queued where no worker takes it
        s.scalars(select(ImageStore).where(ImageStore.uuid == region.store["id"])).one().readonly = False
        s.flush()
        assert region_sync.queue_uploads(s, runtime, queue=HELD) == 1
    (copy,) = region_copies(runtime, template["id"])
    (zone_file,) = legacy_zone.path.rglob("*.qcow2")
    directory = zone_file.parent.relative_to(legacy_zone.path).as_posix() + "/"  # the same key on every store
    try:
        def die(_pct):
            raise WorkerKilled()

        with pytest.raises(WorkerKilled):  # the upload's worker dies: the region copy stays "in progress"
            region_sync.upload_copy(runtime, copy.id, 0, die, logging.getLogger("test"))
        assert region_copies(runtime, template["id"])[0].download_state == "DOWNLOAD_IN_PROGRESS"
        # Not refused for that upload; the zone held the only Ready copy, so the unfinished
        # region copy goes too, and with it the template.
        quick_cs.deleteTemplate(id=template["id"], zoneid=legacy_zone.zone["id"], fetch_result=True)
        assert listed(quick_cs, template) == [] and region_copies(runtime, template["id"]) == []
    finally:
        with runtime.session() as s:  # the upload is taken over: it finds its copy gone
            s.execute(update(AsyncJob).where(AsyncJob.id == copy.job_id).values(queue=region_sync.COPY_QUEUE))
    wait_for(lambda: job_state(runtime, copy.job_id) == "succeeded")
    assert under(region, directory) == []


def job_state(runtime, job_id: int) -> str | None:
    with runtime.session() as s:
        return s.scalar(select(AsyncJob.state).where(AsyncJob.id == job_id))


class Relay:
    """A TCP relay to the moto server that can be switched off (connections refused, open ones
    cut) and on again on the same port: the region store goes offline and comes back."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.target, self.port = (host, int(port)), free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()

    def on(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self.target)
            self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def off(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for s in list(self._open):
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self._open.clear()


def test_a_delete_with_the_region_store_offline_is_completed_when_it_is_back(quick_cs, runtime, region, serve, images,
                                                                            unique_name):
    direct = urlsplit(region.store["url"]).netloc
    relay = Relay(direct)
    relay.on()
    quick_cs.updateImageStore(id=region.store["id"], endpoint=f"127.0.0.1:{relay.port}", maxerrorretry=0)
    try:
        template = ready_everywhere(quick_cs, region, serve(images["qcow2"]), unique_name)
        (copy,) = region_copies(runtime, template["id"])
        directory = directory_of(copy)
        relay.off()
        quick_cs.deleteTemplate(id=template["id"], fetch_result=True)
        assert listed(quick_cs, template) == []
        assert under(region, directory)  # the objects are still there, the removal is owed
        retry_pending_deletions(runtime)  # still offline: still owed
        assert owed(runtime, copy.store_id, directory) == 1
        relay.on()
        retry_pending_deletions(runtime)
        assert owed(runtime, copy.store_id, directory) == 0
        assert under(region, directory) == []
        account_dir, template_dir = directory.rstrip("/").rsplit("/", 1)
        assert template_dir not in store_objects(quick_cs, region.store["id"], account_dir)
    finally:
        relay.off()
        quick_cs.updateImageStore(id=region.store["id"], endpoint=direct, maxerrorretry=3)


def owed(runtime, store_id: int, prefix: str) -> int:
    with runtime.session() as s:
        return len(s.scalars(select(PendingStoreDeletion.id).where(PendingStoreDeletion.store_id == store_id,
                                                                   PendingStoreDeletion.prefix == prefix)).all())
