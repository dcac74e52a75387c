"""Moving data between image stores: migrateSecondaryStorageData,
migrateResourceToAnotherSecondaryStorage (with the dryrun extension), listImageStoreObjects."""

from __future__ import annotations

from typing import Any

from secstor.api.context import CallContext
from secstor.api.format import cs_date, drop_none
from secstor.api.params import Param, PType
from secstor.api.registry import ADMIN_ONLY, api_command
from secstor.api.results import AsyncResult, ListResult
from secstor.db.models import ImageStore
from secstor.domain.errors import InvalidParameter
from secstor.services import migration as mig
from secstor.stores.base import ObjectNotFound, StoreError, validate_dir

_DRYRUN = Param("dryrun", PType.BOOLEAN, description="secstor extension: return the plan (each object, from, to, "
                "bytes, the imbalance before and after, the estimated duration) as the job result and move nothing")


def _submit(ctx: CallContext, p: dict[str, Any], params: dict[str, Any], handler: str, src: ImageStore) -> AsyncResult:
    job = ctx.submit_job(mig.PLAN_HANDLER if p.get("dryrun") else handler, params, instance_type="ImageStore",
                         instance_id=src.uuid)
    return AsyncResult(job.uuid)


@api_command(
    "migrateSecondaryStorageData",
    params=[
        Param("srcpool", PType.UUID, required=True, description="id of the image store to migrate data from"),
        Param("destpools", PType.LIST, required=True, item_type=PType.UUID,
              description="ids of the image stores to migrate data to"),
        Param("migrationtype", description="Balance (spread data evenly) or Complete (drain the source, made "
                                           "read-only); default Complete, case-insensitive"),
        _DRYRUN,
    ],
    roles=ADMIN_ONLY,
    description="migrates data objects from one secondary storage to destination image store(s). Complete makes "
                "the source read-only before anything moves, and it stays read-only however the job ends (succeeded, "
                "failed, or cancelled with cancelAsyncJob): updateImageStore readonly=false reopens it. Cancelling "
                "stops the copies in flight and undoes them; every object stays Ready on exactly one store.",
    is_async=True,
    response_object="imagestore",
)
def migrate_secondary_storage_data(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    policy = mig.parse_policy(p.get("migrationtype"))
    src = mig.source_store(ctx.db, p["srcpool"])
    mig.valid_destinations(ctx.db, src, p["destpools"])
    params = {"srcpool": src.uuid, "destpools": p["destpools"], "policy": policy}
    return _submit(ctx, p, params, mig.DATA_HANDLER, src)


@api_command(
    "migrateResourceToAnotherSecondaryStorage",
    params=[
        Param("srcpool", PType.UUID, required=True, description="id of the image store to migrate the objects from"),
        Param("destpool", PType.UUID, required=True, description="id of the image store to migrate the objects to"),
        Param("templates", PType.LIST, item_type=PType.UUID, description="ids of the templates and ISOs to migrate"),
        Param("snapshots", PType.LIST, item_type=PType.UUID, description="ids of the snapshots to migrate"),
        Param("volumes", PType.LIST, item_type=PType.UUID, description="ids of the volumes to migrate"),
        _DRYRUN,
    ],
    roles=ADMIN_ONLY,
    description="migrates the given templates, snapshots and volumes to another secondary storage",
    is_async=True,
    response_object="imagestore",
)
def migrate_resources(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    src = mig.source_store(ctx.db, p["srcpool"])
    mig.valid_destinations(ctx.db, src, [p["destpool"]])
    requested = {param: p[param] for param in ("templates", "snapshots", "volumes") if p.get(param)}
    if not requested:
        raise InvalidParameter("Please specify templates, snapshots or volumes to migrate", "templates")
    mig.targeted_objects(ctx.db, src, requested)
    params = {"srcpool": src.uuid, "destpools": [p["destpool"]], "objects": requested}
    return _submit(ctx, p, params, mig.RESOURCES_HANDLER, src)


@api_command(
    "listImageStoreObjects",
    params=[
        Param("id", PType.UUID, required=True, description="id of the image store"),
        Param("path", description="path to list on the image store (default /)", length=2048),
    ],
    roles=ADMIN_ONLY,
    description="Lists the objects on an image store under a path",
    is_list=True,
    response_object="datastoreobject",
)
def list_image_store_objects(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    store = ctx.get_by_uuid(ImageStore, p["id"], what="image store")
    given = p.get("path") or "/"
    try:
        path = validate_dir(given.strip("/"))
    except ValueError as exc:
        raise InvalidParameter(f"{given} is not a valid path: {exc}", "path") from None
    ctx.db.commit()  # listing is I/O (seconds over a network): no transaction held meanwhile
    try:
        entries = ctx.runtime.drivers.for_store(store).list_dir(path)
    except ObjectNotFound:
        raise InvalidParameter(f"{given} doesn't exist in store: {store.name}", "path") from None
    except StoreError as exc:
        raise InvalidParameter(f"image store {store.name} cannot be listed: {exc}", "id") from None
    page, total = ctx.page_items(p, entries)
    parts = path.split("/") if path else []
    names = [e.key.rsplit("/", 1)[-1] for e in page]
    owners: dict[str, dict] = {}
    for kind in mig.KINDS.values():
        owners.update(kind.owners_of_dirs(ctx.db, parts, names))
    items = [drop_none({"name": name, "isdirectory": e.is_dir, "size": None if e.is_dir else e.size,
                        "lastupdated": cs_date(e.modified), **owners.get(name, {})})
             for name, e in zip(names, page)]
    return ListResult("datastoreobject", items, total)
