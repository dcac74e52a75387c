"""Templates and ISOs moved by signed URLs: getUploadParamsForTemplate, getUploadParamsForIso,
extractTemplate, extractIso. The URLs themselves are served by secstor.api.transfer_routes."""

from __future__ import annotations

from typing import Any

from secstor.api.commands.templates import _COMMON_REGISTER_PARAMS, ISO_PARAMS, TEMPLATE_PARAMS, iso_spec, template_spec
from secstor.api.context import CallContext
from secstor.api.params import Param, PType
from secstor.api.registry import ALL_ROLES, api_command
from secstor.api.results import AsyncResult, ObjectResult
from secstor.db.models import VMTemplate, Zone
from secstor.domain.errors import InvalidParameter
from secstor.services import transfers

# As registerTemplate/registerIso, without the url, for exactly one zone.
_UPLOAD_PARAMS = [p for p in _COMMON_REGISTER_PARAMS if p.name not in ("url", "zoneid", "zoneids")] + [
    Param("zoneid", PType.UUID, required=True, description="the ID of the zone the upload goes to"),
]
_UPLOAD_DESCRIPTION = ("Creates the {what} and returns what a browser or `curl` needs to upload its file: a "
                       "multipart POST of the field `file` to postURL, with the headers X-signature, X-metadata "
                       "and X-expires set to signature, metadata and expires. The upload is verified (checksum, "
                       "size, format) like a download.")


@api_command("getUploadParamsForTemplate", params=_UPLOAD_PARAMS + TEMPLATE_PARAMS, roles=ALL_ROLES,
             description=_UPLOAD_DESCRIPTION.format(what="template"), response_object="getuploadparams")
def get_upload_params_for_template(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    return ObjectResult("getuploadparams", transfers.issue_upload(ctx.db, ctx.runtime, template_spec(ctx, p),
                                                                  p["zoneid"]))


@api_command("getUploadParamsForIso", params=_UPLOAD_PARAMS + ISO_PARAMS, roles=ALL_ROLES,
             description=_UPLOAD_DESCRIPTION.format(what="ISO"), response_object="getuploadparams")
def get_upload_params_for_iso(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    return ObjectResult("getuploadparams", transfers.issue_upload(ctx.db, ctx.runtime, iso_spec(ctx, p), p["zoneid"]))


_EXTRACT_PARAMS = [
    Param("id", PType.UUID, required=True, description="the ID of the template or ISO"),
    Param("mode", required=True, description="HTTP_DOWNLOAD (FTP_UPLOAD is not supported)"),
    Param("zoneid", PType.UUID, description="extract the copy held in this zone"),
    Param("url", length=2048, description="the FTP destination of FTP_UPLOAD, which is not supported"),
]


def _extract(ctx: CallContext, p: dict[str, Any], *, is_iso: bool) -> AsyncResult:
    what = "ISO" if is_iso else "template"
    mode = p["mode"].strip().upper()
    if mode == "FTP_UPLOAD":
        raise InvalidParameter("Extract mode FTP_UPLOAD is not supported: use HTTP_DOWNLOAD", "mode")
    if mode != transfers.HTTP_DOWNLOAD:
        raise InvalidParameter(f"Please specify a valid extract Mode: {transfers.HTTP_DOWNLOAD}", "mode")
    template = ctx.get_by_uuid(VMTemplate, p["id"], "id", what=what)
    if template.is_iso != is_iso:
        raise InvalidParameter(f"Unsupported format, could not extract the {what}", "id")
    zone = ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone") if "zoneid" in p else None
    if not ctx.caller.is_admin and not template.extractable:
        raise InvalidParameter(f"Unable to extract template id={template.uuid} as it's not extractable", "id")
    ctx.check_owner(template.account_id)
    transfers.ready_copy(ctx.db, template, zone.id if zone else None)  # refused now rather than in the job
    # The URL names this API server (its public_url), whichever worker signs it.
    params = {"template_id": template.id, "zone_id": zone.id if zone else None,
              "base_url": ctx.runtime.config.resolved_public_url, "object_name": "iso" if is_iso else "template"}
    job = ctx.submit_job(transfers.EXTRACT_HANDLER, params, instance_type="Iso" if is_iso else "Template",
                         instance_id=template.uuid)
    return AsyncResult(job.uuid)


@api_command("extractTemplate", params=_EXTRACT_PARAMS, roles=ALL_ROLES, is_async=True, response_object="template",
             description="Returns a signed URL, valid for extract.url.expiration.interval seconds, that downloads "
                         "the template's image (HTTP Range supported) from an image store holding it.")
def extract_template(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    return _extract(ctx, p, is_iso=False)


@api_command("extractIso", params=_EXTRACT_PARAMS, roles=ALL_ROLES, is_async=True, response_object="iso",
             description="Returns a signed URL, valid for extract.url.expiration.interval seconds, that downloads "
                         "the ISO (HTTP Range supported) from an image store holding it.")
def extract_iso(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    return _extract(ctx, p, is_iso=True)
