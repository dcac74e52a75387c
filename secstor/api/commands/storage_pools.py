"""Primary storage pools: createStoragePool, listStoragePools, updateStoragePool, deleteStoragePool."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse

from sqlalchemy import delete, func, select

from secstor.api.context import CallContext
from secstor.api.params import Param, PType
from secstor.api.registry import ADMIN_ONLY, api_command
from secstor.api.results import ListResult, ObjectResult, SuccessResult
from secstor.db.models import StoragePool, TemplatePoolCache, Volume, Zone
from secstor.domain.errors import InvalidParameter
from secstor.primary.posix import FORMATS, QCOW2, PoolError, PosixPool, qemu_img_available
from secstor.services import volumes as vols


def _response(ctx: CallContext, pool: StoragePool) -> dict[str, Any]:
    allocated = vols.allocated_by_pool(ctx.db, [pool.id]).get(pool.id, 0)
    return vols.pool_response(pool, allocated, admin=ctx.caller.is_admin)


def _path_of(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
        raise InvalidParameter(f"Invalid url {url}: a pool is a local directory given as file:///path", "url")
    path = unquote(parsed.path).rstrip("/") or "/"
    if path == "/" or "/../" in f"{path}/":
        raise InvalidParameter(f"Invalid url {url}: give a directory of its own", "url")
    return path


def _check_name(ctx: CallContext, name: str, pool_id: int | None = None) -> str:
    name = name.strip()
    if not name:
        raise InvalidParameter("Storage pool name cannot be empty", "name")
    same = select(StoragePool.id).where(StoragePool.name == name, StoragePool.removed.is_(None))
    if ctx.db.scalars(same).first() not in (None, pool_id):
        raise InvalidParameter(f"A storage pool with name {name} already exists", "name")
    return name


@api_command(
    "createStoragePool",
    params=[
        Param("name", required=True, description="the name for the storage pool"),
        Param("zoneid", PType.UUID, required=True, description="the Zone ID for the storage pool"),
        Param("url", required=True, length=2048, description="the URL of the storage pool: file:///path"),
        Param("scope", description="the scope of the storage: only zone"),
        Param("provider", description="the storage provider: DefaultPrimary (a POSIX directory)"),
        Param("capacitybytes", PType.LONG, description="bytes the pool may hold (default: its file system's size)"),
        Param("tags", description="accepted for compatibility; secstor does not place by tags"),
        Param("details", PType.MAP, description="the details for the storage pool (accepted and ignored)"),
        Param("hypervisor", description="accepted for compatibility; instances run on the Simulator"),
        Param("podid", PType.UUID, description="accepted for compatibility (zone-wide pools only)"),
        Param("clusterid", PType.UUID, description="accepted for compatibility (zone-wide pools only)"),
        Param("volumeformat", description="secstor extension: the format of new volumes, RAW (sparse files, "
                                          "the default) or QCOW2"),
    ],
    roles=ADMIN_ONLY,
    description="Creates a primary storage pool: a directory (local disk or a mounted shared file system) that is "
                "probed for writing first.",
    response_object="storagepool",
)
def create_storage_pool(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    name = _check_name(ctx, p["name"])
    zone = ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone")
    path = _path_of(p["url"])
    if p.get("scope", "zone").lower() != "zone":
        raise InvalidParameter("Only zone-wide storage pools are supported", "scope")
    if p.get("provider", "DefaultPrimary") not in ("DefaultPrimary", "Local"):
        raise InvalidParameter(f"Storage provider {p['provider']} is not supported; use DefaultPrimary", "provider")
    fmt = p.get("volumeformat", "RAW").upper()
    if fmt not in FORMATS:
        raise InvalidParameter(f"volumeformat must be one of {', '.join(FORMATS)}", "volumeformat")
    if fmt == QCOW2 and not qemu_img_available():
        raise InvalidParameter("QCOW2 pools need qemu-img (Debian package qemu-utils) on every server",
                               "volumeformat")
    capacity = p.get("capacitybytes")
    if capacity is not None and capacity <= 0:
        raise InvalidParameter("capacitybytes must be greater than 0", "capacitybytes")
    if ctx.db.scalars(select(StoragePool).where(StoragePool.path == path, StoragePool.removed.is_(None))).first():
        raise InvalidParameter(f"Storage pool {path} already in use by another pool", "url")
    pool_dir = PosixPool(path)
    try:
        pool_dir.probe_writable()
        cap = pool_dir.capacity()
    except (PoolError, OSError) as exc:
        raise InvalidParameter(f"Failed to add storage pool: {exc}", "url") from None
    pool = StoragePool(name=name, zone_id=zone.id, provider="Local", url=f"file://{path}", path=path, scope="ZONE",
                       state="Up", volume_format=fmt, capacity_bytes=capacity, total_bytes=cap.total_bytes,
                       used_bytes=cap.used_bytes, created=ctx.now)
    ctx.db.add(pool)
    ctx.db.flush()
    pool.zone = zone
    return ObjectResult("storagepool", _response(ctx, pool))


@api_command(
    "listStoragePools",
    params=[
        Param("id", PType.UUID, description="the ID of the storage pool"),
        Param("name", description="the name of the storage pool"),
        Param("zoneid", PType.UUID, description="the Zone ID for the storage pool"),
        Param("path", description="the storage pool path"),
        Param("scope", description="the scope of the storage pool"),
    ],
    roles=ADMIN_ONLY,
    description="Lists primary storage pools.",
    is_list=True,
    response_object="storagepool",
)
def list_storage_pools(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    stmt = select(StoragePool).where(StoragePool.removed.is_(None)).order_by(StoragePool.id)
    if "id" in p:
        stmt = stmt.where(StoragePool.uuid == p["id"])
    if "name" in p:
        stmt = stmt.where(StoragePool.name == p["name"])
    if "zoneid" in p:
        stmt = stmt.where(StoragePool.zone_id == ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone").id)
    if "path" in p:
        stmt = stmt.where(StoragePool.path == p["path"])
    if "scope" in p:
        stmt = stmt.where(StoragePool.scope == p["scope"].upper())
    if "keyword" in p:
        stmt = stmt.where(StoragePool.name.contains(p["keyword"]))
    rows, total = ctx.page(p, stmt)
    allocated = vols.allocated_by_pool(ctx.db, [r.id for r in rows])
    return ListResult("storagepool", [vols.pool_response(r, allocated.get(r.id, 0), admin=ctx.caller.is_admin)
                                      for r in rows], total)


@api_command(
    "updateStoragePool",
    params=[
        Param("id", PType.UUID, required=True, description="the Id of the storage pool"),
        Param("name", description="the new name of the storage pool"),
        Param("capacitybytes", PType.LONG, description="bytes the pool may hold"),
        Param("enabled", PType.BOOLEAN, description="false to stop placing new volumes on the pool (Disabled)"),
        Param("tags", description="accepted for compatibility"),
    ],
    roles=ADMIN_ONLY,
    description="Updates a storage pool: name, capacity cap, enabled/disabled.",
    response_object="storagepool",
)
def update_storage_pool(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    pool = ctx.get_by_uuid(StoragePool, p["id"], "id", what="storage pool")
    if "name" in p:
        pool.name = _check_name(ctx, p["name"], pool.id)
    if "capacitybytes" in p:
        if p["capacitybytes"] <= 0:
            raise InvalidParameter("capacitybytes must be greater than 0", "capacitybytes")
        pool.capacity_bytes = p["capacitybytes"]
    if "enabled" in p:
        pool.state = "Up" if p["enabled"] else "Disabled"
    return ObjectResult("storagepool", _response(ctx, pool))


@api_command(
    "deleteStoragePool",
    params=[
        Param("id", PType.UUID, required=True, description="Storage pool id"),
        Param("forced", PType.BOOLEAN, description="accepted for compatibility; a pool with volumes is never "
                                                   "deleted"),
    ],
    roles=ADMIN_ONLY,
    description="Deletes a storage pool; refused while volumes live on it. Its directory and the templates cached "
                "there are left on disk.",
)
def delete_storage_pool(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    pool = ctx.get_by_uuid(StoragePool, p["id"], "id", what="storage pool")
    live = ctx.db.scalar(select(func.count()).select_from(Volume).where(Volume.pool_id == pool.id,
                                                                         Volume.removed.is_(None)))
    if live:
        raise InvalidParameter(f"Cannot delete pool {pool.name} as there are associated non-destroyed vols for "
                               f"this pool", "id")
    ctx.db.execute(delete(TemplatePoolCache).where(TemplatePoolCache.pool_id == pool.id))
    pool.removed = ctx.now
    # The name becomes free for a new pool; the row keeps its history.
    pool.name = f"{pool.name}-removed-{pool.uuid}"[:255]
    return SuccessResult()
