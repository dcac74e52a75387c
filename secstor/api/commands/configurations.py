"""Global settings: listConfigurations, updateConfiguration, resetConfiguration."""

from __future__ import annotations

import logging
from typing import Any

from secstor.api.context import CallContext
from secstor.api.format import drop_none
from secstor.api.params import Param
from secstor.api.registry import ADMIN_ONLY, api_command
from secstor.api.results import ListResult, ObjectResult
from secstor.domain.settings import Setting

log = logging.getLogger("secstor.settings")

# CloudStack's ConfigurationResponse `type` names for the Java types of its ConfigKeys.
_RESPONSE_TYPES = {"Integer": "Number", "Long": "Number", "Float": "Decimal", "Boolean": "Boolean",
                   "String": "String", "CSV": "CSV"}


def configuration_response(setting: Setting, value: str) -> dict[str, Any]:
    """CloudStack's ConfigurationResponse. scope is lower-case, as CloudStack writes the scopes it
    reports ("zone", "account" ...)."""
    return drop_none({
        "category": setting.category,
        "name": setting.name,
        "value": value,
        "defaultvalue": setting.default,
        "description": setting.description + (" (secstor setting)" if setting.extension else ""),
        "scope": setting.scope.lower(),
        "isdynamic": setting.dynamic,
        # A setting with a fixed set of values is what CloudStack calls a Select.
        "type": "Select" if setting.options else _RESPONSE_TYPES[setting.type],
        "options": ",".join(setting.options) if setting.options else None,
        "component": "secstor",
    })


@api_command(
    "listConfigurations",
    params=[
        Param("name", description="lists configurations whose name contains this text"),
        Param("category", description="lists configurations by category"),
    ],
    roles=ADMIN_ONLY,
    description="Lists all configurations (settings) with their value, default and description.",
    is_list=True,
    response_object="configuration",
)
def list_configurations(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    rows = ctx.runtime.settings.rows()
    # CloudStack matches name with LIKE %name%, category exactly.
    if "name" in p:
        rows = [(s, v) for s, v in rows if p["name"].lower() in s.name.lower()]
    if "category" in p:
        rows = [(s, v) for s, v in rows if s.category.lower() == p["category"].lower()]
    if "keyword" in p:
        kw = p["keyword"].lower()
        rows = [(s, v) for s, v in rows if kw in s.name.lower() or kw in s.description.lower()]
    page, total = ctx.page_items(p, rows)
    return ListResult("configuration", [configuration_response(s, v) for s, v in page], total)


@api_command(
    "updateConfiguration",
    params=[
        Param("name", required=True, description="the name of the configuration"),
        Param("value", length=4096, description="the value of the configuration; empty clears it"),
    ],
    roles=ADMIN_ONLY,
    description="Updates a configuration; a value that does not validate is refused with the reason.",
    response_object="configuration",
)
def update_configuration(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    value = p.get("value", "")
    setting = ctx.runtime.settings.set(ctx.db, p["name"], value)
    log.info("setting %s set to %r by user=%s", setting.name, value, ctx.caller.user_uuid)
    return ObjectResult("configuration", configuration_response(setting, value))


@api_command(
    "resetConfiguration",
    params=[Param("name", required=True, description="the name of the configuration")],
    roles=ADMIN_ONLY,
    description="Resets a configuration to its default value.",
    response_object="configuration",
)
def reset_configuration(ctx: CallContext, p: dict[str, Any]) -> ObjectResult:
    setting = ctx.runtime.settings.reset(ctx.db, p["name"])
    log.info("setting %s reset to its default by user=%s", setting.name, ctx.caller.user_uuid)
    return ObjectResult("configuration", configuration_response(setting, setting.default))
