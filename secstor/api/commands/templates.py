"""Templates and ISOs: registerTemplate, registerIso, listTemplates, listIsos, deleteTemplate, deleteIso."""

from __future__ import annotations

from typing import Any

from secstor.api.context import CallContext
from secstor.api.params import Param, PType
from secstor.api.registry import ALL_ROLES, api_command
from secstor.api.results import AsyncResult, ListResult
from secstor.db.models import VMTemplate, Zone
from secstor.domain import templates as dt
from secstor.domain.errors import InvalidParameter, NotFound
from secstor.services import templates as svc
from secstor.services.template_listing import page_of_pairs

_COMMON_REGISTER_PARAMS = [
    Param("name", required=True, description="the name of the template or ISO"),
    Param("url", required=True, length=2048, description="the http, https or ftp URL of the image"),
    Param("displaytext", length=4096, description="the display text (defaults to the name)"),
    Param("zoneid", description="the ID of the zone to download to; -1 for every zone"),
    Param("zoneids", PType.LIST, description="the IDs of the zones to download to (not with zoneid)"),
    Param("checksum", description="{ALG}hex with ALG one of MD5, SHA-1, SHA-224, SHA-256, SHA-384, SHA-512; "
                                  "bare hex is MD5"),
    Param("ispublic", PType.BOOLEAN, description="true if the image is usable by every account"),
    Param("isfeatured", PType.BOOLEAN, description="true if the image is featured (admins only)"),
    Param("isextractable", PType.BOOLEAN, description="true if the image may be extracted"),
    Param("ostypeid", description="the ID of the OS type"),
    Param("passwordenabled", PType.BOOLEAN, description="true if the image supports the password reset feature"),
    Param("isdynamicallyscalable", PType.BOOLEAN, description="true if the image contains XS/VMware tools"),
]


def _zone_ids(p: dict[str, Any]) -> list[str]:
    if "zoneid" in p and "zoneids" in p:
        raise InvalidParameter("Parameters zoneid and zoneids cannot be specified together", "zoneids")
    if "zoneid" in p:
        return [p["zoneid"].strip()]
    if p.get("zoneids"):
        return [z.strip() for z in p["zoneids"]]
    raise InvalidParameter("Either zoneid or zoneids is required", "zoneid")


def _spec(ctx: CallContext, p: dict[str, Any], *, is_iso: bool, fmt: str) -> svc.NewTemplate:
    name = p["name"].strip()
    if not name:
        raise InvalidParameter("Template name cannot be empty", "name")
    admin = ctx.caller.is_admin
    return svc.NewTemplate(
        name=name, displaytext=p.get("displaytext") or name, format=fmt,
        url=p["url"].strip() if "url" in p else None, is_iso=is_iso,  # no url: an upload
        account_id=ctx.caller.account_id, ostypeid=p.get("ostypeid"),
        checksum=svc.parse_given_checksum(p.get("checksum")),
        is_public=p.get("ispublic", False),
        featured=p.get("isfeatured", False) and admin,  # CloudStack ignores isfeatured from users
        extractable=p.get("isextractable", False),
        passwordenabled=p.get("passwordenabled", False),
        isdynamicallyscalable=p.get("isdynamicallyscalable", False),
    )


def _registered(ctx: CallContext, spec: svc.NewTemplate, zone_ids: list[str], object_name: str) -> ListResult:
    template = svc.register(ctx.db, ctx.runtime, spec, zone_ids, ctx.submit_job)
    items = svc.responses_of(ctx.db, template, is_admin=ctx.caller.is_admin)
    return ListResult(object_name, items, len(items))


# The parameters of a template that an ISO has not (shared with getUploadParamsForTemplate).
TEMPLATE_PARAMS = [
    Param("format", required=True, description="the format: QCOW2, RAW, VHD, VHDX, VMDK or OVA"),
    Param("hypervisor", required=True, description="the target hypervisor (KVM, XenServer, VMware ...)"),
    Param("bits", PType.INTEGER, description="32 or 64 bits support (default 64)"),
    Param("requireshvm", PType.BOOLEAN, description="true if the template requires HVM (default true)"),
    Param("sshkeyenabled", PType.BOOLEAN, description="true if the template supports the sshkey upload"),
    Param("isrouting", PType.BOOLEAN, admin_only=True, description="true for a routing (system VM) template"),
    Param("templatetype", admin_only=True, description="USER, SYSTEM, BUILTIN or ROUTING (admins only)"),
]
ISO_PARAMS = [Param("bootable", PType.BOOLEAN, description="true if the ISO is bootable (default true)")]


@api_command(
    "registerTemplate",
    params=_COMMON_REGISTER_PARAMS + TEMPLATE_PARAMS,
    roles=ALL_ROLES,
    description="Registers an existing template into the cloud: it is downloaded to the image stores of "
                "the zones given.",
    response_object="template",
)
def register_template(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    return _registered(ctx, template_spec(ctx, p), _zone_ids(p), "template")


def template_spec(ctx: CallContext, p: dict[str, Any]) -> svc.NewTemplate:
    """A new template from registerTemplate's (or getUploadParamsForTemplate's) parameters."""
    fmt = p["format"].strip().upper()
    if fmt not in dt.FORMATS or fmt == "ISO":
        raise InvalidParameter(f"Image format: {p['format']} is incorrect. Supported formats are "
                               f"{', '.join(f for f in dt.FORMATS if f != 'ISO')}", "format")
    if p.get("bits", 64) not in (32, 64):
        raise InvalidParameter("Invalid bits value: must be 32 or 64", "bits")
    template_type = p.get("templatetype", "ROUTING" if p.get("isrouting") else "USER").strip().upper()
    if template_type not in dt.TEMPLATE_TYPES:
        raise InvalidParameter(f"Invalid templatetype {p['templatetype']}: valid values are "
                               f"{', '.join(dt.TEMPLATE_TYPES)}", "templatetype")
    spec = _spec(ctx, p, is_iso=False, fmt=fmt)
    spec.hypervisor = p["hypervisor"].strip()
    spec.bits = p.get("bits", 64)
    spec.requireshvm = p.get("requireshvm", True)
    spec.sshkeyenabled = p.get("sshkeyenabled", False)
    spec.template_type = template_type
    return spec


@api_command(
    "registerIso",
    params=_COMMON_REGISTER_PARAMS + ISO_PARAMS,
    roles=ALL_ROLES,
    description="Registers an existing ISO into the cloud: it is downloaded to the image stores of the zones given.",
    response_object="iso",
)
def register_iso(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    return _registered(ctx, iso_spec(ctx, p), _zone_ids(p), "iso")


def iso_spec(ctx: CallContext, p: dict[str, Any]) -> svc.NewTemplate:
    """A new ISO from registerIso's (or getUploadParamsForIso's) parameters."""
    spec = _spec(ctx, p, is_iso=True, fmt="ISO")
    spec.bootable = p.get("bootable", True)
    return spec


_LIST_PARAMS = [
    Param("id", PType.UUID, description="the ID of the template or ISO"),
    Param("name", description="the name of the template or ISO"),
    Param("zoneid", PType.UUID, description="list only copies in this zone"),
    Param("hypervisor", description="the hypervisor of the templates"),
    Param("isready", PType.BOOLEAN, description="true: only templates or ISOs with a Ready copy"),
]


def _list(ctx: CallContext, p: dict[str, Any], *, is_iso: bool, filter_param: str, filter_value: str) -> ListResult:
    zone = ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone") if "zoneid" in p else None
    q = svc.ListQuery(
        is_iso=is_iso, visibility=dt.visibility(filter_value, filter_param, is_admin=ctx.caller.is_admin),
        account_id=ctx.caller.account_id, is_admin=ctx.caller.is_admin, template_uuid=p.get("id"),
        name=p.get("name"), keyword=p.get("keyword"), zone_id=zone.id if zone else None,
        hypervisor=p.get("hypervisor"), bootable=p.get("bootable"), is_public=p.get("ispublic"),
        ready_only=bool(p.get("isready")),
    )
    region = svc.region_copies_possible(ctx.db)
    pairs, total = page_of_pairs(ctx.db, lambda ids: svc.zone_rows_select(q, ids, region=region), (q, region),
                                 ctx._page_window(p))
    return ListResult("iso" if is_iso else "template", svc.responses(ctx.db, pairs, is_admin=ctx.caller.is_admin),
                      total)


@api_command(
    "listTemplates",
    params=[Param("templatefilter", required=True, description="featured, self, selfexecutable, shared, "
                                                             "sharedexecutable, executable, community or all")]
    + _LIST_PARAMS,
    roles=ALL_ROLES,
    description="Lists templates, one entry per zone holding them, with their download progress.",
    is_list=True,
    response_object="template",
)
def list_templates(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    return _list(ctx, p, is_iso=False, filter_param="templatefilter", filter_value=p["templatefilter"])


@api_command(
    "listIsos",
    params=[Param("isofilter", description="as templatefilter; default selfexecutable"),
            Param("bootable", PType.BOOLEAN, description="true: only bootable ISOs"),
            Param("ispublic", PType.BOOLEAN, description="true: only public ISOs")] + _LIST_PARAMS,
    roles=ALL_ROLES,
    description="Lists ISOs, one entry per zone holding them, with their download progress.",
    is_list=True,
    response_object="iso",
)
def list_isos(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    return _list(ctx, p, is_iso=True, filter_param="isofilter", filter_value=p.get("isofilter", "selfexecutable"))


def _delete(ctx: CallContext, p: dict[str, Any], *, is_iso: bool) -> AsyncResult:
    what = "ISO" if is_iso else "template"
    template = ctx.get_by_uuid(VMTemplate, p["id"], "id", what=what)
    if template.is_iso != is_iso:
        raise NotFound(f"Unable to find {what} with specified id {p['id']}", "id")
    ctx.check_owner(template.account_id)
    zone = ctx.get_by_uuid(Zone, p["zoneid"], "zoneid", what="zone") if "zoneid" in p else None
    svc.refuse_while_downloading(svc.copies_to_delete(ctx.db, template, zone))
    job = ctx.submit_job(svc.DELETE_HANDLER, {"template_id": template.id, "zone_id": zone.id if zone else None},
                         instance_type="Iso" if is_iso else "Template", instance_id=template.uuid)
    return AsyncResult(job.uuid)


_DELETE_PARAMS = [
    Param("id", PType.UUID, required=True, description="the ID of the template or ISO"),
    Param("zoneid", PType.UUID, description="delete only the copies in this zone"),
    Param("forced", PType.BOOLEAN, description="accepted for compatibility: no VM uses templates here"),
]


@api_command("deleteTemplate", params=_DELETE_PARAMS, roles=ALL_ROLES, is_async=True,
             description="Deletes a template: every copy on every image store (or those of one zone).")
def delete_template(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    return _delete(ctx, p, is_iso=False)


@api_command("deleteIso", params=_DELETE_PARAMS, roles=ALL_ROLES, is_async=True,
             description="Deletes an ISO: every copy on every image store (or those of one zone).")
def delete_iso(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    return _delete(ctx, p, is_iso=True)
