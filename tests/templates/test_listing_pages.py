"""Paging of listTemplates: every page carries the full count, and the pages together list each
(template, zone) entry once, in the unpaged order, also when a template's zones straddle pages."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from secstor.db.models import Account, ImageStore, TemplateStoreRef, VMTemplate, Zone
from secstor.domain import templates as dt
from secstor.domain.states import DownloadState, ObjectInStoreState
from secstor.services import template_listing
from secstor.services import templates as svc


def _zone_with_store(admin_cs, tmp_path_factory) -> str:
    suffix = uuid.uuid4().hex[:8]
    zone = admin_cs.createZone(name=f"pages-{suffix}", dns1="8.8.8.8", internaldns1="8.8.8.8")["zone"]
    path = tmp_path_factory.mktemp("pages-store")
    admin_cs.addImageStore(provider="Local", url=f"file://{path}", name=f"pages-{suffix}", zoneid=zone["id"])
    return zone["id"]


def _ready_templates(runtime, zone_uuids: list[str], prefix: str, count: int) -> int:
    """``count`` templates of the admin named ``prefix``-n, each with a Ready copy in every
    zone; returns the admin's account id."""
    with runtime.session() as s:
        account_id = s.scalars(select(Account.id).where(Account.name == "admin")).one()
        zones = s.execute(select(Zone.id, ImageStore.id).join(ImageStore, ImageStore.zone_id == Zone.id)
                          .where(Zone.uuid.in_(zone_uuids))).all()
        for n in range(count):
            t = VMTemplate(name=f"{prefix}-{n}", displaytext="t", format="QCOW2", hypervisor="KVM",
                           account_id=account_id, url="http://example.org/image", created=runtime.now())
            s.add(t)
            s.flush()
            for zone_id, store_id in zones:
                s.add(TemplateStoreRef(template_id=t.id, store_id=store_id, zone_id=zone_id, created=runtime.now(),
                                       state=ObjectInStoreState.Ready.value,
                                       download_state=DownloadState.DOWNLOADED.value, download_pct=100))
    return account_id


def test_pages_list_every_template_zone_once_with_the_full_count(runtime, admin_cs, tmp_path_factory, unique_name):
    zone_uuids = [_zone_with_store(admin_cs, tmp_path_factory) for _ in range(2)]
    _ready_templates(runtime, zone_uuids, unique_name, 3)  # 3 templates × 2 zones: 6 entries

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


def test_pages_across_buckets_from_a_kept_snapshot_match_the_unpaged_listing(runtime, admin_cs, tmp_path_factory,
                                                                           unique_name, monkeypatch):
    """With buckets of 2 template ids, pages start and end in different buckets (and mid-way
    through a template's zones); with a snapshot threshold of 1 the counts come from the kept
    snapshot. Either way the pages are the unpaged listing cut in order."""
    zone_uuids = [_zone_with_store(admin_cs, tmp_path_factory) for _ in range(2)]
    account_id = _ready_templates(runtime, zone_uuids, unique_name, 7)  # 14 entries
    monkeypatch.setattr(template_listing, "BUCKET_IDS", 2)
    q = svc.ListQuery(is_iso=False, visibility=dt.visibility("all", "templatefilter", is_admin=True),
                      account_id=account_id, is_admin=True, keyword=unique_name)
    for min_pairs in (10_000, 1):  # read on every request, then kept
        monkeypatch.setattr(template_listing, "SNAPSHOT_MIN_PAIRS", min_pairs)
        with runtime.session() as s:
            region = svc.region_copies_possible(s)

            def pairs_select(ids):
                return svc.zone_rows_select(q, ids, region=region)

            unpaged, total = template_listing.page_of_pairs(s, pairs_select, (q, min_pairs), None)
            assert total == len(unpaged) == len(set(unpaged)) == 14
            for size in (1, 2, 3, 5, 14):
                pages = [template_listing.page_of_pairs(s, pairs_select, (q, min_pairs), (offset, size))
                         for offset in range(0, 14, size)]
                assert [n for _, n in pages] == [14] * len(pages), size
                assert [pair for page, _ in pages for pair in page] == unpaged, size
            assert template_listing.page_of_pairs(s, pairs_select, (q, min_pairs), (14, 5)) == ([], 14)
