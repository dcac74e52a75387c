"""API parameter declarations and parsing: every bad value becomes a 431 naming the parameter."""

from __future__ import annotations

import re
import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from secstor.domain.errors import InvalidParameter


class PType(str, Enum):
    # Values are CloudStack's CommandType names, which listApis reports.
    STRING = "string"
    UUID = "uuid"
    INTEGER = "integer"
    LONG = "long"
    SHORT = "short"
    BOOLEAN = "boolean"
    LIST = "list"
    MAP = "map"
    DATE = "date"


@dataclass(frozen=True)
class Param:
    name: str
    type: PType = PType.STRING
    required: bool = False
    description: str = ""
    length: int = 255
    item_type: PType = PType.STRING  # element type of a LIST
    since: str | None = None
    admin_only: bool = False  # silently ignored for non-admin callers


def _missing(cmd: str, name: str) -> InvalidParameter:
    return InvalidParameter(f"Unable to execute API command {cmd.lower()} due to missing parameter {name}", name)


def _invalid(cmd: str, name: str, value: str, why: str) -> InvalidParameter:
    return InvalidParameter(
        f"Unable to execute API command {cmd.lower()} due to invalid value. Invalid parameter {name} "
        f"value={value} due to {why}",
        name,
    )


_MAP_KEY = re.compile(r"^([a-z0-9_]+)\[(\d+)\]\.([a-z0-9_]+)$")


def _convert(cmd: str, p: Param, ptype: PType, raw: str) -> Any:
    value = raw.strip()
    if ptype is PType.STRING:
        if len(raw) > p.length:
            raise _invalid(cmd, p.name, raw[:40] + "...", f"a value longer than {p.length} characters")
        return raw
    if ptype is PType.UUID:
        try:
            return str(uuidlib.UUID(value))
        except ValueError:
            raise _invalid(cmd, p.name, raw, "incorrect long value format, or entity does not exist or due to "
                           "incorrect parameter annotation for the field in api cmd class") from None
    if ptype in (PType.INTEGER, PType.LONG, PType.SHORT):
        try:
            return int(value)
        except ValueError:
            raise _invalid(cmd, p.name, raw, f"incorrect {ptype.value} value format") from None
    if ptype is PType.BOOLEAN:
        low = value.lower()
        if low not in ("true", "false"):
            raise _invalid(cmd, p.name, raw, "incorrect boolean value format: true or false expected")
        return low == "true"
    if ptype is PType.DATE:
        for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
            try:
                return datetime.strptime(value, fmt)
            except ValueError:
                continue
        raise _invalid(cmd, p.name, raw, "incorrect date value format, yyyy-MM-dd or yyyy-MM-dd HH:mm:ss expected")
    raise AssertionError(ptype)


def parse_params(cmd: str, declared: list[Param], raw: dict[str, str]) -> dict[str, Any]:
    """Convert the raw request parameters (names already lower-cased) into typed values.

    Unknown parameters are ignored, as CloudStack does. Empty strings count as absent.
    """
    out: dict[str, Any] = {}
    maps: dict[str, dict[int, dict[str, str]]] = {}
    for key, value in raw.items():
        m = _MAP_KEY.match(key)
        if m:
            maps.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = value
    for p in declared:
        if p.type is PType.MAP:
            entries = maps.get(p.name)
            if entries:
                out[p.name] = [entries[i] for i in sorted(entries)]
            elif p.required:
                raise _missing(cmd, p.name)
            continue
        value = raw.get(p.name)
        if value is None or value == "":
            if p.required:
                raise _missing(cmd, p.name)
            continue
        if p.type is PType.LIST:
            out[p.name] = [_convert(cmd, p, p.item_type, v) for v in value.split(",") if v.strip()]
        else:
            out[p.name] = _convert(cmd, p, p.type, value)
    return out


def map_to_dict(entries: list[dict[str, str]] | None) -> dict[str, str]:
    """``details[0].key=a&details[0].value=b`` and ``details[0].a=b`` both become ``{"a": "b"}``."""
    result: dict[str, str] = {}
    for entry in entries or []:
        if "key" in entry and "value" in entry:
            result[entry["key"]] = entry["value"]
        else:
            result.update(entry)
    return result
