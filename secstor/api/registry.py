"""The command registry: every API command declares its name, parameters, roles and kind here.

``listApis`` is generated from this registry, so the declaration is also the documentation.
Command modules live in ``secstor/api/commands/`` and are imported by ``load_commands``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from secstor.api.params import Param, PType

if TYPE_CHECKING:
    from secstor.api.context import CallContext
    from secstor.api.results import Result

Handler = Callable[["CallContext", dict[str, Any]], "Result"]

ADMIN = "Admin"
USER = "User"
ALL_ROLES = frozenset({ADMIN, USER})
ADMIN_ONLY = frozenset({ADMIN})

# Parameters every list command accepts (CloudStack's BaseListCmd).
LIST_PARAMS = [
    Param("keyword", description="List by keyword"),
    Param("page", PType.INTEGER, description="Page number, from 1"),
    Param("pagesize", PType.INTEGER, description="Items per page"),
]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    params: list[Param]
    roles: frozenset[str]
    description: str
    is_async: bool = False
    is_list: bool = False
    response_object: str | None = None  # e.g. "imagestore"
    response_key: str | None = None  # overrides "<name lower>response" (CloudStack quirks)
    extension: bool = False  # a secstor command CloudStack lacks
    needs_auth: bool = True
    related: tuple[str, ...] = ()
    response_fields: tuple[tuple[str, str], ...] = field(default=())  # (name, description) for listApis

    @property
    def key(self) -> str:
        return self.response_key or f"{self.name.lower()}response"


REGISTRY: dict[str, Command] = {}


def api_command(
    name: str,
    *,
    params: list[Param] | None = None,
    roles: frozenset[str] = ADMIN_ONLY,
    description: str,
    is_async: bool = False,
    is_list: bool = False,
    response_object: str | None = None,
    response_key: str | None = None,
    extension: bool = False,
    needs_auth: bool = True,
    response_fields: tuple[tuple[str, str], ...] = (),
) -> Callable[[Handler], Handler]:
    """Register a handler as an API command (decorator)."""

    def wrap(fn: Handler) -> Handler:
        declared = list(params or [])
        if is_list:
            declared += [p for p in LIST_PARAMS if p.name not in {d.name for d in declared}]
        lower = name.lower()
        if lower in REGISTRY:
            raise ValueError(f"command {name} registered twice")
        REGISTRY[lower] = Command(
            name=name, handler=fn, params=declared, roles=roles, description=description, is_async=is_async,
            is_list=is_list, response_object=response_object, response_key=response_key, extension=extension,
            needs_auth=needs_auth, response_fields=response_fields,
        )
        return fn

    return wrap


_loaded = False


def load_commands() -> dict[str, Command]:
    """Import every module in secstor.api.commands so their decorators run."""
    global _loaded
    if not _loaded:
        import secstor.api.commands as pkg

        for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
        _loaded = True
    return REGISTRY
