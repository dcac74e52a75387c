"""Templates and ISOs after registration: updateTemplate/updateIso, their launch permissions
(update/list TemplatePermissions and IsoPermissions) and copyTemplate/copyIso to other zones."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select

from secstor.api.context import CallContext
from secstor.api.params import Param, PType, map_to_dict
from secstor.api.registry import ALL_ROLES, api_command
from secstor.api.results import AsyncResult, ObjectResult, SuccessResult
from secstor.db.models import Account, LaunchPermission, TemplateStoreRef, VMTemplate, Zone
from secstor.domain import templates as dt
from secstor.domain.errors import InvalidParameter, NotFound, PermissionDenied
from secstor.domain.states import ObjectInStoreState
from secstor.services import template_copy
from secstor.services import templates as svc


def _find(ctx: CallContext, uuid: str, *, is_iso: bool) -> VMTemplate:
    """The template (or ISO) ``id`` names; an ISO is not found as a template and vice versa."""
    what = "ISO" if is_iso else "template"
    template = ctx.get_by_uuid(VMTemplate, uuid, "id", what=what)
    if template.is_iso != is_iso:
        raise NotFound(f"Unable to find {what} with specified id {uuid}", "id")
    return template


def _response(ctx: CallContext, template: VMTemplate) -> dict[str, Any]:
    """The template as listed in its first zone (or without a zone when it has no copy)."""
    ctx.db.flush()
    items = svc.responses_of(ctx.db, template, is_admin=ctx.caller.is_admin)
    return items[0] if items else svc.responses(ctx.db, [(template.id, None)], is_admin=ctx.caller.is_admin)[0]


# ---- updateTemplate / updateIso ----------------------------------------------------------------

_UPDATE_PARAMS = [
    Param("id", PType.UUID, required=True, description="the ID of the template or ISO"),
    Param("name", description="the new name"),
    Param("displaytext", length=4096, description="the new display text"),
    Param("bootable", PType.BOOLEAN, description="true if the image is bootable"),
    Param("ostypeid", description="the ID of the OS type"),
    Param("passwordenabled", PType.BOOLEAN, description="true if the image supports the password reset feature"),
    Param("isdynamicallyscalable", PType.BOOLEAN, description="true if the image contains XS/VMware tools"),
    Param("details", PType.MAP, description="details to set, replacing the existing ones "
                                            "(details[0].key=..&details[0].value=..)"),
    Param("cleanupdetails", PType.BOOLEAN, description="true: remove every detail"),
]


def _update(ctx: CallContext, p: dict[str, Any], *, is_iso: bool) -> ObjectResult:
    template = _find(ctx, p["id"], is_iso=is_iso)
    ctx.check_owner(template.account_id)
    changes: dict[str, Any] = {}
    if "name" in p:
        if not p["name"].strip():
            raise InvalidParameter("Template name cannot be empty", "name")
        changes["name"] = p["name"].strip()
    for field in ("displaytext", "bootable", "ostypeid", "passwordenabled", "isdynamicallyscalable",
                  "sshkeyenabled", "requireshvm"):
        if field in p:
            changes[field] = p[field]
    if "format" in p:
        changes["format"] = _new_format(ctx, template, p["format"])
    if ctx.caller.is_admin:  # CloudStack ignores these from other callers
        template_type = _template_type(p, template)
        if template_type is not None:
            changes["template_type"] = template_type
    if p.get("cleanupdetails"):
        changes["details_json"] = None
    elif "details" in p:
        changes["details_json"] = json.dumps(map_to_dict(p["details"]), sort_keys=True)
    for field, value in changes.items():  # only once every value is known to be valid
        setattr(template, field, value)
    return ObjectResult("iso" if is_iso else "template", _response(ctx, template))


def _new_format(ctx: CallContext, template: VMTemplate, value: str) -> str:
    """A new declared format, refused once a copy is Ready: that copy was inspected and
    verified as the old format (a deliberate difference from CloudStack)."""
    fmt = value.strip().upper()
    if fmt not in dt.FORMATS or fmt == "ISO":
        raise InvalidParameter(f"Image format: {value} is incorrect. Supported formats are "
                               f"{', '.join(f for f in dt.FORMATS if f != 'ISO')}", "format")
    if fmt != template.format and ctx.db.scalar(
            select(TemplateStoreRef.id).where(TemplateStoreRef.template_id == template.id,
                                              TemplateStoreRef.state == ObjectInStoreState.Ready.value).limit(1)):
        raise InvalidParameter(f"The format of template {template.name} cannot change: a copy of it was already "
                               f"verified as {template.format}", "format")
    return fmt


def _template_type(p: dict[str, Any], template: VMTemplate) -> str | None:
    if "templatetype" in p:
        value = p["templatetype"].strip().upper()
        if value not in dt.TEMPLATE_TYPES:
            raise InvalidParameter(f"Invalid templatetype {p['templatetype']}: valid values are "
                                   f"{', '.join(dt.TEMPLATE_TYPES)}", "templatetype")
        return value
    if "isrouting" in p:
        if p["isrouting"]:
            return "ROUTING"
        return "USER" if template.template_type == "ROUTING" else None
    return None


@api_command(
    "updateTemplate",
    params=_UPDATE_PARAMS + [
        Param("format", description="the format: QCOW2, RAW, VHD, VHDX, VMDK or OVA (only until a copy is Ready)"),
        Param("requireshvm", PType.BOOLEAN, description="true if the template requires HVM"),
        Param("sshkeyenabled", PType.BOOLEAN, description="true if the template supports the sshkey upload"),
        Param("isrouting", PType.BOOLEAN, admin_only=True, description="true for a routing (system VM) template"),
        Param("templatetype", admin_only=True, description="USER, SYSTEM, BUILTIN or ROUTING (admins only)"),
    ],
    roles=ALL_ROLES,
    description="Updates the attributes of a template (its owner or an admin).",
    response_object="template",
)
def update_template(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    return _update(ctx, p, is_iso=False)


@api_command("updateIso", params=_UPDATE_PARAMS, roles=ALL_ROLES,
             description="Updates the attributes of an ISO (its owner or an admin).", response_object="iso")
def update_iso(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    return _update(ctx, p, is_iso=True)


# ---- launch permissions ------------------------------------------------------------------------

_PERMISSION_OPS = ("add", "remove", "reset")

_PERMISSION_PARAMS = [
    Param("id", PType.UUID, required=True, description="the ID of the template or ISO"),
    Param("ispublic", PType.BOOLEAN, description="true: every account may use it"),
    Param("isfeatured", PType.BOOLEAN, description="true: featured (admins only)"),
    Param("isextractable", PType.BOOLEAN, description="true: it may be extracted (for templates: admins only)"),
    Param("accounts", PType.LIST, description="account names to share it with or stop sharing it with; needs op"),
    Param("projectids", PType.LIST, item_type=PType.UUID, description="projects (none exist in secstor); needs op"),
    Param("op", description="add, remove or reset (reset: share with nobody)"),
]


def _accounts_named(ctx: CallContext, names: list[str]) -> list[Account]:
    wanted = list(dict.fromkeys(n.strip() for n in names))
    found = {a.name: a for a in ctx.db.scalars(select(Account).where(Account.name.in_(wanted),
                                                                      Account.removed.is_(None)))}
    for name in wanted:
        if name not in found:
            raise InvalidParameter(f"Unable to find account {name}", "accounts")
    return [found[n] for n in wanted]


def _update_permissions(ctx: CallContext, p: dict[str, Any], *, is_iso: bool) -> SuccessResult:
    template = _find(ctx, p["id"], is_iso=is_iso)
    ctx.check_owner(template.account_id)
    if "isfeatured" in p and not ctx.caller.is_admin:
        raise PermissionDenied("Only admins may change whether a template or ISO is featured")
    if "isextractable" in p and not is_iso and not ctx.caller.is_admin:
        raise InvalidParameter("Only ROOT admins are allowed to modify isExtractable attribute.", "isextractable")
    op = p.get("op", "").strip().lower() or None
    if op is not None and op not in _PERMISSION_OPS:
        raise InvalidParameter(f"Invalid op {p['op']}: valid values are {', '.join(_PERMISSION_OPS)}", "op")
    if ("accounts" in p or "projectids" in p) and op is None:
        raise InvalidParameter("Specify op (add, remove or reset) with accounts or projectids", "op")
    if p.get("projectids"):
        raise InvalidParameter(f"Unable to find project by id {p['projectids'][0]}", "projectids")
    if op in ("add", "remove") and not p.get("accounts"):
        raise InvalidParameter(f"Specify the accounts to {op}", "accounts")
    accounts = _accounts_named(ctx, p["accounts"]) if op in ("add", "remove") else []
    for param, field in (("ispublic", "is_public"), ("isfeatured", "featured"), ("isextractable", "extractable")):
        if param in p:
            setattr(template, field, p[param])
    shared_now = set(ctx.db.scalars(select(LaunchPermission.account_id)
                                    .where(LaunchPermission.template_id == template.id)))
    if op == "reset":
        ctx.db.execute(delete(LaunchPermission).where(LaunchPermission.template_id == template.id))
    elif op == "add":
        for account in accounts:
            if account.id != template.account_id and account.id not in shared_now:
                ctx.db.add(LaunchPermission(template_id=template.id, account_id=account.id))
    elif op == "remove":
        ctx.db.execute(delete(LaunchPermission).where(LaunchPermission.template_id == template.id,
                                                      LaunchPermission.account_id.in_([a.id for a in accounts])))
    return SuccessResult()


@api_command("updateTemplatePermissions", params=_PERMISSION_PARAMS, roles=ALL_ROLES,
             description="Updates who may use a template: public, featured, extractable, and the accounts it is "
                         "shared with (its owner or an admin).")
def update_template_permissions(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    return _update_permissions(ctx, p, is_iso=False)


@api_command("updateIsoPermissions", params=_PERMISSION_PARAMS, roles=ALL_ROLES,
             description="Updates who may use an ISO: public, featured, extractable, and the accounts it is "
                         "shared with (its owner or an admin).")
def update_iso_permissions(ctx: CallContext, p: dict[str, Any]) -> SuccessResult:
    return _update_permissions(ctx, p, is_iso=True)


def _list_permissions(ctx: CallContext, p: dict[str, Any], *, is_iso: bool) -> ObjectResult:
    template = _find(ctx, p["id"], is_iso=is_iso)
    if not template.is_public:
        ctx.check_owner(template.account_id)
    owner = ctx.db.get(Account, template.account_id)
    names = ctx.db.scalars(select(Account.name).join(LaunchPermission, LaunchPermission.account_id == Account.id)
                           .where(LaunchPermission.template_id == template.id).order_by(Account.name)).all()
    return ObjectResult("templatepermission", {"id": template.uuid, "ispublic": template.is_public,
                                               "domainid": owner.domain.uuid, "account": list(names)})


_LIST_PERMISSION_PARAMS = [Param("id", PType.UUID, required=True, description="the ID of the template or ISO")]


@api_command("listTemplatePermissions", params=_LIST_PERMISSION_PARAMS, roles=ALL_ROLES,
             description="Lists the accounts a template is shared with.", response_object="templatepermission")
def list_template_permissions(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    return _list_permissions(ctx, p, is_iso=False)


@api_command("listIsoPermissions", params=_LIST_PERMISSION_PARAMS, roles=ALL_ROLES,
             description="Lists the accounts an ISO is shared with.", response_object="templatepermission")
def list_iso_permissions(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    return _list_permissions(ctx, p, is_iso=True)


# ---- copyTemplate / copyIso --------------------------------------------------------------------

_COPY_PARAMS = [
    Param("id", PType.UUID, required=True, description="the ID of the template or ISO"),
    Param("destzoneid", PType.UUID, description="the zone to copy to"),
    Param("destzoneids", PType.LIST, item_type=PType.UUID, description="the zones to copy to (not with destzoneid)"),
    Param("sourcezoneid", PType.UUID, description="the zone to copy from (default: any zone with a Ready copy)"),
]


def _copy(ctx: CallContext, p: dict[str, Any], *, is_iso: bool) -> AsyncResult:
    template = _find(ctx, p["id"], is_iso=is_iso)
    ctx.check_owner(template.account_id)
    if "destzoneid" in p and "destzoneids" in p:
        raise InvalidParameter("Parameters destzoneid and destzoneids cannot be specified together", "destzoneids")
    dest_uuids = [p["destzoneid"]] if "destzoneid" in p else list(dict.fromkeys(p.get("destzoneids", [])))
    if not dest_uuids:
        raise InvalidParameter("Either destzoneid or destzoneids is required", "destzoneid")
    param = "destzoneid" if "destzoneid" in p else "destzoneids"
    dest_zones = [ctx.get_by_uuid(Zone, z, param, what="zone") for z in dest_uuids]
    source_zone = ctx.get_by_uuid(Zone, p["sourcezoneid"], "sourcezoneid", what="zone") if "sourcezoneid" in p \
        else None
    if source_zone is not None and source_zone in dest_zones:
        raise InvalidParameter("Please specify different source and destination zones.", param)
    template_copy.ready_source(ctx.db, template, source_zone)
    job = ctx.submit_job(template_copy.COPY_HANDLER, {
        "template_id": template.id, "source_zone_id": source_zone.id if source_zone else None,
        "dest_zone_ids": [z.id for z in dest_zones], "dest_zone_uuids": dest_uuids,
        "caller_is_admin": ctx.caller.is_admin,
    }, instance_type="Iso" if is_iso else "Template", instance_id=template.uuid, queue=template_copy.COPY_QUEUE)
    return AsyncResult(job.uuid)


@api_command("copyTemplate", params=_COPY_PARAMS, roles=ALL_ROLES, is_async=True, response_object="template",
             description="Copies a Ready template to the image stores of other zones, verified against its "
                         "checksum.")
def copy_template(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    return _copy(ctx, p, is_iso=False)


@api_command("copyIso", params=_COPY_PARAMS, roles=ALL_ROLES, is_async=True, response_object="iso",
             description="Copies a Ready ISO to the image stores of other zones, verified against its checksum.")
def copy_iso(ctx: CallContext, p: dict[str, Any]) -> AsyncResult:
    return _copy(ctx, p, is_iso=True)
