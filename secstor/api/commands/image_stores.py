"""Image stores: addImageStore, addImageStoreS3, addSecondaryStorage, listImageStores,
updateImageStore, deleteImageStore, listStorageProviders."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from secstor.api.context import CallContext
from secstor.api.format import drop_none
from secstor.api.params import Param, PType, map_to_dict
from secstor.api.registry import ADMIN_ONLY, api_command
from secstor.api.results import ListResult, ObjectResult, SuccessResult
from secstor.db.models import ImageStore, Zone
from secstor.domain.errors import InvalidParameter
from secstor.services.image_stores import (
    PRIMARY_PROVIDERS,
    PROVIDERS,
    S3_UPDATABLE,
    add_image_store,
    delete_image_store,
    update_image_store,
)


def image_store_response(store: ImageStore) -> dict[str, Any]:
    """CloudStack's ImageStoreResponse. Secrets are never part of it."""
    return drop_none({
        "id": store.uuid,
        "zoneid": store.zone.uuid if store.zone is not None else None,
        "zonename": store.zone.name if store.zone is not None else None,
        "name": store.name,
        "url": store.url,
        "protocol": store.protocol,
        "providername": store.provider,
        "scope": store.scope,
        "readonly": store.readonly,
        "disksizetotal": store.total_bytes,
        "disksizeused": store.used_bytes,
        "hasannotations": False,
    })


IMAGE_STORE_FIELDS = (
    ("id", "the ID of the image store"), ("zoneid", "the Zone ID of the image store"),
    ("zonename", "the Zone name of the image store"), ("name", "the name of the image store"),
    ("url", "the url of the image store"), ("protocol", "the protocol of the image store"),
    ("providername", "the provider name of the image store"), ("scope", "the scope of the image store"),
    ("readonly", "defines if store is read-only"), ("disksizetotal", "the total disk size of the host"),
    ("disksizeused", "the host's currently used disk size"), ("hasannotations", "the current status of the latest annotation"),
)


def _zone(ctx: CallContext, p: dict[str, Any]) -> Zone | None:
    return ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone") if "zoneid" in p else None


def _detail_text(value: Any) -> str:
    """CloudStack keeps store details as strings ("true", "5000")."""
    return str(value).lower() if isinstance(value, bool) else str(value)


S3_PARAMS = [
    Param("s3signer", description="Signer algorithm: S3SignerType (V2) or AWSS3V4SignerType (V4)"),
    Param("usehttps", PType.BOOLEAN, description="Use HTTPS instead of HTTP"),
    Param("connectiontimeout", PType.INTEGER, description="Connection timeout (milliseconds)"),
    Param("maxerrorretry", PType.INTEGER, description="Maximum number of times to retry on error"),
    Param("sockettimeout", PType.INTEGER, description="Socket timeout (milliseconds)"),
    Param("connectionttl", PType.INTEGER, description="Connection TTL (milliseconds); accepted, has no effect"),
    Param("usetcpkeepalive", PType.BOOLEAN, description="Whether TCP keep-alive is used"),
    # secstor extensions: what S3-compatible servers other than AWS need (docs/configuration.md).
    Param("region", description="Signing region for SigV4 (secstor extension; default us-east-1)"),
    Param("pathstyle", PType.BOOLEAN, description="Path-style addressing (default true); false: virtual-host "
                                                  "(bucket.endpoint), which needs wildcard DNS or a proxy "
                                                  "(secstor extension)"),
    Param("checksummode", description="when_required (default; what Ceph RGW and older MinIO accept) or "
                                      "when_supported (botocore 1.36's default: CRC32 on every upload) "
                                      "(secstor extension)"),
    Param("proxy", description="HTTP proxy URL for this store's requests (secstor extension)"),
    Param("partsize", PType.LONG, description="Multipart part size in bytes (at least 5 MiB; grown to stay "
                                              "under 10,000 parts) (secstor extension)"),
    Param("uploadconcurrency", PType.INTEGER, description="Parts uploaded in parallel per object; memory per "
                                                         "upload is at most (uploadconcurrency + 1) x partsize "
                                                         "(secstor extension)"),
    Param("singleputmax", PType.LONG, description="Objects up to this size are uploaded with one PUT, larger "
                                                  "ones in parts (secstor extension)"),
]


@api_command(
    "addImageStore",
    params=[
        Param("provider", required=True, description="the image store provider name: Local, NFS or S3"),
        Param("name", description="the name for the image store (default: the url)"),
        Param("url", length=2048, description="the URL for the image store: file:///absolute/path (Local) or "
                                             "nfs://host/export (NFS)"),
        Param("zoneid", PType.UUID, description="the Zone ID for the image store; without it the store is "
                                                "region-wide"),
        Param("details", PType.MAP, description="the details for the image store. Example: "
                                                "details[0].key=accesskey&details[0].value=s389ddssaa"),
    ],
    roles=ADMIN_ONLY,
    description="Adds backup image store. The store is probed (reachable, mounted, writable) before it is "
                "saved; unlike CloudStack, providers may be mixed.",
    response_object="imagestore",
    response_fields=IMAGE_STORE_FIELDS,
)
def add_image_store_cmd(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    store = add_image_store(ctx.db, ctx.runtime, provider=p["provider"], url=p.get("url"), name=p.get("name"),
                            zone=_zone(ctx, p), details=map_to_dict(p.get("details")))
    return ObjectResult("imagestore", image_store_response(store))


@api_command(
    "addImageStoreS3",
    params=[
        Param("accesskey", required=True, description="S3 access key"),
        Param("secretkey", required=True, description="S3 secret key"),
        Param("endpoint", required=True, description="S3 endpoint: host[:port], or an http(s):// URL"),
        Param("bucket", required=True, description="Name of the storage bucket"),
        *S3_PARAMS,
        Param("zoneid", PType.UUID, description="the Zone ID (secstor extension); without it the store is "
                                                "region-wide"),
        Param("name", description="the name for the image store (secstor extension; default: the url)"),
    ],
    roles=ADMIN_ONLY,
    description="Adds S3 Image Store. The credentials are probed before the store is saved and kept encrypted.",
    response_object="imagestore",
    response_key="addImageStoreS3Response",
    response_fields=IMAGE_STORE_FIELDS,
)
def add_image_store_s3(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    names = ("accesskey", "secretkey", "endpoint", "bucket", *(q.name for q in S3_PARAMS))
    details = {n: _detail_text(p[n]) for n in names if n in p}
    store = add_image_store(ctx.db, ctx.runtime, provider="S3", url=None, name=p.get("name"), zone=_zone(ctx, p),
                            details=details)
    return ObjectResult("imagestore", image_store_response(store))


@api_command(
    "addSecondaryStorage",
    params=[
        Param("url", required=True, length=2048, description="the URL for the secondary storage: nfs://host/export"),
        Param("zoneid", PType.UUID, description="the Zone ID for the secondary storage"),
    ],
    roles=ADMIN_ONLY,
    description="Adds secondary storage (the pre-4.2 command: the provider is always NFS).",
    response_object="secondarystorage",
    response_fields=IMAGE_STORE_FIELDS,
)
def add_secondary_storage(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    store = add_image_store(ctx.db, ctx.runtime, provider="NFS", url=p["url"], name=None, zone=_zone(ctx, p))
    return ObjectResult("secondarystorage", image_store_response(store))


@api_command(
    "listImageStores",
    params=[
        Param("id", PType.UUID, description="the ID of the storage pool"),
        Param("name", description="the name of the image store"),
        Param("zoneid", PType.UUID, description="the Zone ID for the image store"),
        Param("provider", description="the image store provider"),
        Param("protocol", description="the image store protocol"),
        Param("readonly", PType.BOOLEAN, since="4.15.0", description="read-only status of the image store"),
    ],
    roles=ADMIN_ONLY,
    description="Lists image stores.",
    is_list=True,
    response_object="imagestore",
    response_fields=IMAGE_STORE_FIELDS,
)
def list_image_stores(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    # Staging stores (role ImageCache) are listSecondaryStagingStores' own, as in CloudStack.
    stmt = filter_stores(select(ImageStore).where(ImageStore.role == "Image"), p)
    if "readonly" in p:
        stmt = stmt.where(ImageStore.readonly == p["readonly"])
    rows, total = ctx.page(p, stmt)
    return ListResult("imagestore", [image_store_response(s) for s in rows], total)


def filter_stores(stmt, p: dict[str, Any]):
    """listImageStores' and listSecondaryStagingStores' common filters on live stores."""
    stmt = stmt.where(ImageStore.removed.is_(None)).order_by(ImageStore.id)
    if "id" in p:
        stmt = stmt.where(ImageStore.uuid == p["id"])
    if "name" in p:
        stmt = stmt.where(ImageStore.name == p["name"])
    if "zoneid" in p:
        stmt = stmt.where(ImageStore.zone_id.in_(select(Zone.id).where(Zone.uuid == p["zoneid"])))
    if "provider" in p:
        stmt = stmt.where(ImageStore.provider == PROVIDERS.get(p["provider"].strip().lower(), p["provider"]))
    if "protocol" in p:
        stmt = stmt.where(ImageStore.protocol == p["protocol"].strip().lower())
    if "keyword" in p:
        stmt = stmt.where(ImageStore.name.contains(p["keyword"], autoescape=True))
    return stmt


@api_command(
    "updateImageStore",
    params=[
        Param("id", PType.UUID, required=True, description="Image Store UUID"),
        Param("readonly", PType.BOOLEAN, description="If set to true, it designates the corresponding image store "
                                                     "to read-only, hence not considering them during storage "
                                                     "migration and new data placement"),
        Param("name", description="The new name for the Image Store."),
        Param("capacitybytes", PType.LONG, description="The number of bytes CloudStack can use on this image "
                                                       "storage; 0 removes the cap. With a cap, used is the bytes "
                                                       "held on the store."),
        Param("accesskey", description="S3 access key (S3 stores; secstor extension)"),
        Param("secretkey", description="S3 secret key (S3 stores; secstor extension)"),
        Param("endpoint", description="S3 endpoint (S3 stores; secstor extension)"),
        *S3_PARAMS,
    ],
    roles=ADMIN_ONLY,
    description="Updates image store read-only status, name, capacity cap and (secstor extension) S3 credentials, "
                "endpoint and timeouts; S3 changes are probed before they are saved and apply without restart.",
    response_object="imagestore",
    response_key="updateImageStoreresponse",
    response_fields=IMAGE_STORE_FIELDS,
)
def update_image_store_cmd(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    store = ctx.get_by_uuid(ImageStore, p["id"], "id", what="image store")
    s3_changes = {n: _detail_text(p[n]) for n in S3_UPDATABLE if n in p}
    update_image_store(ctx.db, ctx.runtime, store, name=p.get("name"), readonly=p.get("readonly"),
                       capacity_bytes=p.get("capacitybytes"), s3_changes=s3_changes)
    return ObjectResult("imagestore", image_store_response(store))


@api_command(
    "deleteImageStore",
    params=[Param("id", PType.UUID, required=True, description="the image store ID")],
    roles=ADMIN_ONLY,
    description="Deletes an image store; refused while it holds templates, snapshots or volumes.",
)
def delete_image_store_cmd(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    delete_image_store(ctx.db, ctx.runtime, ctx.get_by_uuid(ImageStore, p["id"], "id", what="image store"))
    return SuccessResult()


@api_command(
    "listStorageProviders",
    params=[Param("type", required=True, description="the type of storage provider: primary or image")],
    roles=ADMIN_ONLY,
    description="Lists storage providers.",
    is_list=True,
    response_object="dataStoreProvider",
    response_fields=(("name", "the name of the storage provider"),
                     ("type", "the type of the storage provider: primary or image provider")),
)
def list_storage_providers(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    kind = p["type"].strip().lower()
    if kind == "image":
        names = list(PROVIDERS.values())
    elif kind == "primary":
        names = list(PRIMARY_PROVIDERS)
    else:
        raise InvalidParameter(f"Invalid storage provider type {p['type']}: type must be image or primary", "type")
    items, total = ctx.page_items(p, [{"name": n, "type": kind} for n in names])
    return ListResult("dataStoreProvider", items, total)

