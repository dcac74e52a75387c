"""Paging of listTemplates: every page carries the full count, and the pages together list each
(template, zone) entry once, in the unpaged order, also when a template's zones straddle pages."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from secstor.db.models import Account, ImageStore, TemplateStoreRef, VMTemplate, Zone
from secstor.domain.states import DownloadState, ObjectInStoreState


def _zone_with_store(admin_cs, tmp_path_factory) -> str:
    suffix = uuid.uuid4().hex[:8]
    zone = admin_cs.createZone(name=f"pages-{suffix}", dns1="8.8.8.8", internaldns1="8.8.8.8")["zone"]
    path = tmp_path_factory.mktemp("pages-store")
    admin_cs.addImageStore(provider="Local", url=f"file://{path}", name=f"pages-{suffix}", zoneid=zone["id"])
    return zone["id"]


def test_pages_list_every_template_zone_once_with_the_full_count(runtime, admin_cs, tmp_path_factory, unique_name):
    zone_uuids = [_zone_with_store(admin_cs, tmp_path_factory) for _ in range(2)]
    with runtime.session() as s:
        account_id = s.scalars(select(Account.id).where(Account.name == "admin")).one()
        zones = s.execute(select(Zone.id, ImageStore.id).join(ImageStore, ImageStore.zone_id == Zone.id)
                          .where(Zone.uuid.in_(zone_uuids))).all()
        for n in range(3):  # 3 templates × 2 zones: 6 entries
            t = VMTemplate(name=f"{unique_name}-{n}", displaytext="t", format="QCOW2", hypervisor="KVM",
                           account_id=account_id, url="http://example.org/image", created=runtime.now())
            s.add(t)
            s.flush()
            for zone_id, store_id in zones:
                s.add(TemplateStoreRef(template_id=t.id, store_id=store_id, zone_id=zone_id, created=runtime.now(),
                                       state=ObjectInStoreState.Ready.value,
                                       download_state=DownloadState.DOWNLOADED.value, download_pct=100))

    def entries(answer: dict) -> list[tuple[str, str]]:
        return [(t["name"], t["zoneid"]) for t in answer.get("template", [])]

    unpaged = admin_cs.listTemplates(templatefilter="all", keyword=unique_name)
    assert unpaged["count"] == 6
    assert len(set(entries(unpaged))) == 6
    for pagesize in (1, 3, 5):  # each starts some page between the two zones of a template
        pages = [admin_cs.listTemplates(templatefilter="all", keyword=unique_name, page=page, pagesize=pagesize)
                 for page in range(1, -(-6 // pagesize) + 1)]
        assert all(p["count"] == 6 for p in pages), pagesize
        assert [e for p in pages for e in entries(p)] == entries(unpaged), pagesize
    beyond = admin_cs.listTemplates(templatefilter="all", keyword=unique_name, page=3, pagesize=5)
    assert beyond.get("template", []) == []
