"""Zone staging stores (role ImageCache): createSecondaryStagingStore,
listSecondaryStagingStores, deleteSecondaryStagingStore."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from secstor.api.commands.image_stores import IMAGE_STORE_FIELDS, filter_stores, image_store_response
from secstor.api.context import CallContext
from secstor.api.params import Param, PType, map_to_dict
from secstor.api.registry import ADMIN_ONLY, api_command
from secstor.api.results import ListResult, ObjectResult, SuccessResult
from secstor.db.models import ImageStore, Zone
from secstor.services.staging import STAGING_ROLE, create_staging_store, delete_staging_store


@api_command(
    "createSecondaryStagingStore",
    params=[
        Param("url", required=True, length=2048, description="the URL for the staging store: file:///absolute/path "
                                                             "(Local) or nfs://host/export (NFS)"),
        Param("zoneid", PType.UUID, description="the Zone ID for the staging store"),
        Param("provider", description="the staging store provider name: Local (default) or NFS"),
        Param("details", PType.MAP, description="the details for the staging store"),
        Param("scope", description="the scope of the staging store: zone only (accepted, ignored)"),
    ],
    roles=ADMIN_ONLY,
    description="create secondary staging store. It caches, per zone, the templates and ISOs of a region-wide "
                "store; it never receives their canonical copy.",
    response_object="secondarystorage",
    response_fields=IMAGE_STORE_FIELDS,
)
def create_secondary_staging_store(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    zone = ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone") if "zoneid" in p else None
    store = create_staging_store(ctx.db, ctx.runtime, url=p["url"], zone=zone, provider=p.get("provider"),
                                 details=map_to_dict(p.get("details")))
    return ObjectResult("secondarystorage", image_store_response(store))


@api_command(
    "listSecondaryStagingStores",
    params=[
        Param("id", PType.UUID, description="the ID of the staging store"),
        Param("name", description="the name of the staging store"),
        Param("zoneid", PType.UUID, description="the Zone ID for the staging store"),
        Param("provider", description="the staging store provider"),
        Param("protocol", description="the staging store protocol"),
    ],
    roles=ADMIN_ONLY,
    description="Lists secondary staging stores.",
    is_list=True,
    response_object="imagestore",
    response_fields=IMAGE_STORE_FIELDS,
)
def list_secondary_staging_stores(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    rows, total = ctx.page(p, filter_stores(select(ImageStore).where(ImageStore.role == STAGING_ROLE), p))
    return ListResult("imagestore", [image_store_response(s) for s in rows], total)


@api_command(
    "deleteSecondaryStagingStore",
    params=[Param("id", PType.UUID, required=True, description="the staging store ID")],
    roles=ADMIN_ONLY,
    description="Deletes a staging store; its cached copies are removed first.",
)
def delete_secondary_staging_store(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    store = ctx.get_by_uuid(ImageStore, p["id"], "id", what="staging store")
    delete_staging_store(ctx.db, ctx.runtime, store)
    return SuccessResult()
