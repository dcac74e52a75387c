"""Operators' template commands: resetTemplateDownload (an extension)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from secstor.api.context import CallContext
from secstor.api.params import Param, PType
from secstor.api.registry import ADMIN_ONLY, api_command
from secstor.api.results import ListResult
from secstor.db.models import ImageStore, TemplateStoreRef, VMTemplate, Zone
from secstor.domain.errors import InvalidParameter
from secstor.services import template_sync as sync
from secstor.services import templates as svc


@api_command(
    "resetTemplateDownload",
    params=[
        Param("id", PType.UUID, required=True, description="the ID of the template or ISO"),
        Param("storeid", PType.UUID, description="only the copy on this image store"),
        Param("zoneid", PType.UUID, description="only the copies in this zone"),
    ],
    roles=ADMIN_ONLY,
    description="Downloads again the copies of a template or ISO that failed (DOWNLOAD_ERROR, ABANDONED) or are "
                "stuck with no live job: they go back to NOT_DOWNLOADED and a new job fills each, copying from "
                "a Ready copy when there is one, else from the URL. Without storeid, Ready and downloading "
                "copies are left alone; a copy named by storeid that is Ready or downloading is refused.",
    response_object="template",
    extension=True,
)
def reset_template_download(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    template = ctx.get_by_uuid(VMTemplate, p["id"], "id", what="template")
    stmt = select(TemplateStoreRef).where(TemplateStoreRef.template_id == template.id).order_by(TemplateStoreRef.id)
    if p.get("storeid"):
        store = ctx.get_by_uuid(ImageStore, p["storeid"], "storeid", what="image store")
        stmt = stmt.where(TemplateStoreRef.store_id == store.id)
    if p.get("zoneid"):
        zone = ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone")
        stmt = stmt.where(TemplateStoreRef.zone_id == zone.id)
    copies = list(ctx.db.scalars(stmt))
    if not copies:
        where = "on that image store" if p.get("storeid") else "in that zone"
        raise InvalidParameter(f"Template {template.name} has no copy {where}",
                               "storeid" if p.get("storeid") else "zoneid")
    names = dict(ctx.db.execute(select(ImageStore.id, ImageStore.name)
                                .where(ImageStore.id.in_({c.store_id for c in copies}))).tuples().all())
    sync.reset_downloads(ctx.db, ctx.runtime, template, copies, names, ctx.submit_job, strict=bool(p.get("storeid")))
    items = svc.responses_of(ctx.db, template, is_admin=True)
    return ListResult("template", items, len(items))
