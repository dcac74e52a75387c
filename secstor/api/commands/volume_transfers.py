"""Volumes moved through image stores: uploadVolume, getUploadParamsForVolume, extractVolume.
The URLs themselves are served by secstor.api.transfer_routes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from secstor.api.commands.volumes import find_volume
from secstor.api.context import CallContext
from secstor.api.params import Param, PType
from secstor.api.registry import ALL_ROLES, api_command
from secstor.api.results import AsyncResult, ObjectResult
from secstor.db.models import Account, Domain, ImageStore, Zone
from secstor.domain.errors import InvalidParameter
from secstor.domain.urlsafety import UnsafeUrl, check_url
from secstor.services import templates as tsvc
from secstor.services import transfers
from secstor.services import volume_transfers as vt

_UPLOAD_PARAMS = [
    Param("zoneid", PType.UUID, required=True, description="the ID of the zone the volume is to be uploaded to"),
    Param("format", required=True, description="the format of the volume: RAW or QCOW2"),
    Param("name", required=True, description="the name of the volume"),
    Param("checksum", description="the checksum of the file: {ALG}hex (MD5, SHA-1, SHA-224, SHA-256, SHA-384, "
                                  "SHA-512) or bare hex (MD5)"),
    Param("imagestoreuuid", description="the image store to upload to (default: chosen like a template's)"),
    Param("diskofferingid", PType.UUID, description="accepted for compatibility; ignored"),
    Param("account", description="the account that owns the volume (admins; with domainid)"),
    Param("domainid", PType.UUID, description="the domain of account"),
]


def _owner(ctx: CallContext, p: dict[str, Any]) -> int:
    """The account the volume belongs to: the caller's, or for an admin the one named."""
    if "account" not in p:
        return ctx.caller.account_id
    if "domainid" not in p:
        raise InvalidParameter("Unable to execute API command: account requires domainid", "domainid")
    account = ctx.db.scalars(select(Account).join(Domain, Domain.id == Account.domain_id)
                             .where(Account.name == p["account"], Domain.uuid == p["domainid"],
                                    Account.removed.is_(None))).first()
    if account is None:
        raise InvalidParameter(f"Unable to find account {p['account']} in domain {p['domainid']}", "account")
    ctx.check_owner(account.id)
    return account.id


def _new_volume(ctx: CallContext, p: dict[str, Any], url: str | None):
    name = p["name"].strip()
    if not name:
        raise InvalidParameter("Volume name cannot be empty", "name")
    fmt = vt.check_upload_format(p["format"])
    checksum = tsvc.parse_given_checksum(p.get("checksum"))
    zone = ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone")
    account_id = _owner(ctx, p)
    store = None
    if "imagestoreuuid" in p:
        store = ctx.get_by_uuid(ImageStore, p["imagestoreuuid"], "imagestoreuuid", what="image store")
        if store.zone_id != zone.id:
            raise InvalidParameter(f"Image store {store.name} is not in zone {zone.name}", "imagestoreuuid")
        if store.readonly:
            raise InvalidParameter(f"Image store {store.name} is read-only", "imagestoreuuid")
    return vt.new_uploaded_volume(ctx.db, ctx.runtime, name=name, account_id=account_id, zone=zone, fmt=fmt,
                                  url=url, checksum=checksum, store=store)


@api_command("uploadVolume", params=_UPLOAD_PARAMS + [
    Param("url", required=True, length=2048, description="the http, https or ftp URL of the volume's image"),
], roles=ALL_ROLES, is_async=True, response_object="volume",
    description="Creates a volume from an image at a URL: downloaded to an image store of the zone and verified "
                "(checksum, size, format) like a template, it ends Uploaded (status \"Upload Complete\") and is "
                "copied to primary storage when attached. States: UploadNotStarted, Uploading (\"N% Uploaded\", "
                "\"Checking Volume\"), Uploaded or UploadError.")
def upload_volume(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    url = p["url"].strip()
    try:
        check_url(url)
    except UnsafeUrl as exc:
        raise InvalidParameter(f"Invalid url {url}: {exc}", "url") from None
    volume, ref = _new_volume(ctx, p, url)
    job = ctx.submit_job(vt.UPLOAD_HANDLER, {"ref_id": ref.id, "caller_is_admin": ctx.caller.is_admin},
                         instance_type="Volume", instance_id=volume.uuid)
    ref.job_id = job.id
    return AsyncResult(job.uuid, volume.uuid)


@api_command("getUploadParamsForVolume", params=_UPLOAD_PARAMS, roles=ALL_ROLES, response_object="getuploadparams",
             description="Creates a volume (state NotUploaded) and returns what a browser or `curl` needs to upload "
                         "its image: a multipart POST of the field `file` to postURL, with the headers X-signature, "
                         "X-metadata and X-expires set to signature, metadata and expires. The upload is verified "
                         "like uploadVolume's; an upload not started within upload.operation.timeout minutes ends "
                         "UploadAbandoned.")
def get_upload_params_for_volume(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    volume, ref = _new_volume(ctx, p, None)
    return ObjectResult("getuploadparams", vt.issue_upload(ctx.db, ctx.runtime, volume, ref))


@api_command("extractVolume", params=[
    Param("id", PType.UUID, required=True, description="the ID of the volume"),
    Param("mode", required=True, description="HTTP_DOWNLOAD (FTP_UPLOAD is not supported)"),
    Param("zoneid", PType.UUID, required=True, description="the ID of the zone where the volume is located"),
    Param("url", length=2048, description="the FTP destination of FTP_UPLOAD, which is not supported"),
], roles=ALL_ROLES, is_async=True, response_object="volume",
    description="Returns a signed URL, valid for extract.url.expiration.interval seconds, that downloads the "
                "volume's image (HTTP Range supported). A volume on primary storage is first copied to an image "
                "store of its zone (removed once the URL has expired); a volume attached to an instance that is "
                "not Stopped is refused.")
def extract_volume(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    mode = p["mode"].strip().upper()
    if mode != transfers.HTTP_DOWNLOAD:
        raise InvalidParameter(f"Please specify a valid extract Mode: {transfers.HTTP_DOWNLOAD}", "mode")
    volume = find_volume(ctx, p["id"])
    zone = ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone")
    if volume.zone_id != zone.id:
        raise InvalidParameter(f"Volume {volume.uuid} is not in zone {zone.name}", "zoneid")
    vt.check_extractable(ctx.db, volume, admin=ctx.caller.is_admin)
    job = ctx.submit_job(vt.EXTRACT_HANDLER, {"volume_id": volume.id,
                                              "base_url": ctx.runtime.config.resolved_public_url},
                         instance_type="Volume", instance_id=volume.uuid)
    return AsyncResult(job.uuid)

