"""listApis: the command registry described the way CloudStack's API discovery does, so that
cloudmonkey's `sync` (and any client generator) learns every command and parameter."""

from __future__ import annotations

from typing import Any

from secstor.api.context import CallContext
from secstor.api.format import drop_none
from secstor.api.params import Param
from secstor.api.registry import ALL_ROLES, Command, api_command, load_commands
from secstor.api.results import ListResult

EXTENSION_MARK = "(secstor extension) "

# What CloudStack's SuccessResponse carries, for commands that answer {"success": true}.
_SUCCESS_FIELDS = (("success", "true if operation is executed successfully", "boolean"),
                   ("displaytext", "any text associated with the success or failure", "string"))


def _param_response(param: Param) -> dict[str, Any]:
    # cloudmonkey type-asserts name/type/description as strings and required as a bool.
    return drop_none({
        "name": param.name,
        "description": param.description,
        "type": param.type.value,
        "length": param.length,
        "required": param.required,
        "since": param.since,
    })


def _response_fields(cmd: Command) -> list[dict[str, str]]:
    fields: tuple[tuple[str, ...], ...] = cmd.response_fields
    if not fields and cmd.response_object is None and not cmd.is_async:
        fields = _SUCCESS_FIELDS
    # Declared as (name, description) or (name, description, type).
    return [{"name": f[0], "description": f[1], "type": f[2] if len(f) > 2 else "string"} for f in fields]


def api_response(cmd: Command) -> dict[str, Any]:
    return drop_none({
        "name": cmd.name,
        "description": (EXTENSION_MARK if cmd.extension else "") + cmd.description,
        "isasync": cmd.is_async,
        "related": ",".join(cmd.related) or None,
        "type": cmd.response_object,
        "params": [_param_response(p) for p in sorted(cmd.params, key=lambda p: p.name)],
        "response": _response_fields(cmd),
    })


@api_command(
    "listApis",
    params=[Param("name", description="API name")],
    roles=ALL_ROLES,
    description="Lists the commands the caller may call, with their parameters and response fields.",
    is_list=True,
    response_object="api",
)
def list_apis(ctx: CallContext, p: dict[str, Any]) -> ListResult:
    commands = sorted((c for c in load_commands().values() if ctx.caller.role in c.roles), key=lambda c: c.name)
    if "name" in p:
        commands = [c for c in commands if c.name.lower() == p["name"].lower()]
    if "keyword" in p:
        commands = [c for c in commands if p["keyword"].lower() in c.name.lower()]
    page, total = ctx.page_items(p, commands)
    return ListResult("api", [api_response(c) for c in page], total)
