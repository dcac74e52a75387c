"""What a command handler returns; the protocol layer turns these into CloudStack envelopes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ListResult:
    object_name: str
    items: list[dict[str, Any]]
    count: int


@dataclass
class ObjectResult:
    object_name: str
    obj: dict[str, Any]


@dataclass
class SuccessResult:
    displaytext: str | None = None


@dataclass
class AsyncResult:
    """Answer of an async command: the job id, plus the new object's id for create commands."""

    jobid: str
    id: str | None = None


@dataclass
class RawResult:
    """A body placed as-is under the response key (login, queryAsyncJobResult ...)."""

    body: dict[str, Any] = field(default_factory=dict)


Result = ListResult | ObjectResult | SuccessResult | AsyncResult | RawResult


def result_body(result: Result) -> dict[str, Any]:
    """The JSON under ``<command>response`` (also used as a job's ``jobresult``)."""
    if isinstance(result, ListResult):
        if not result.items:
            # CloudStack: an empty list is {}; a page past the end keeps the total count.
            return {"count": result.count} if result.count else {}
        return {"count": result.count, result.object_name: result.items}
    if isinstance(result, ObjectResult):
        return {result.object_name: result.obj}
    if isinstance(result, SuccessResult):
        body: dict[str, Any] = {"success": True}
        if result.displaytext:
            body["displaytext"] = result.displaytext
        return body
    if isinstance(result, AsyncResult):
        return {"jobid": result.jobid} if result.id is None else {"id": result.id, "jobid": result.jobid}
    return dict(result.body)
