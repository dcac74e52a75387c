"""The context a command handler runs in: the caller, a database session, paging, job submission."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from secstor.api.registry import ADMIN
from secstor.domain.errors import InvalidParameter, NotFound, PermissionDenied

if TYPE_CHECKING:
    from secstor.api.registry import Command
    from secstor.db.models import AsyncJob
    from secstor.runtime import Runtime

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000


@dataclass(frozen=True)
class Caller:
    user_id: int
    user_uuid: str
    username: str
    account_id: int
    account_uuid: str
    account_name: str
    role: str
    domain_id: int
    domain_uuid: str
    domain_name: str
    session_id: int | None = None  # the login session, when the call came with a session key

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


class CallContext:
    def __init__(self, runtime: "Runtime", session: Session, caller: Caller | None, command: "Command"):
        self.runtime = runtime
        self.db = session
        self._caller = caller
        self.command = command
        # Cookies the HTTP reply sets or clears (login and logout).
        self.reply_cookies: dict[str, str] = {}
        self.reply_clear_cookies: list[str] = []

    @property
    def caller(self) -> Caller:
        assert self._caller is not None, "unauthenticated command asked for its caller"
        return self._caller

    @property
    def now(self):
        return self.runtime.now()

    # ---- lookups -------------------------------------------------------------------------
    def get_by_uuid(self, model: type, uuid: str, param: str = "id", *, what: str | None = None) -> Any:
        """The live row with this UUID, or 431 naming the parameter (CloudStack's wording)."""
        stmt = select(model).where(model.uuid == uuid)
        if hasattr(model, "removed"):
            stmt = stmt.where(model.removed.is_(None))
        row = self.db.scalars(stmt).first()
        if row is None:
            raise NotFound(f"Unable to find {what or model.__name__.lower()} with specified {param} {uuid}", param)
        return row

    def check_owner(self, account_id: int | None) -> None:
        """A User touches only its own objects (531, as CloudStack's access checker answers)."""
        if not self.caller.is_admin and account_id != self.caller.account_id:
            raise PermissionDenied(f"Account {self.caller.account_name} does not have permission to operate on this resource")

    # ---- lists ---------------------------------------------------------------------------
    def page(self, params: dict[str, Any], stmt: Select) -> tuple[list[Any], int]:
        """Apply page/pagesize to a select; return the page's rows and the total count."""
        window = self._page_window(params)
        total = self.db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
        if window is not None:
            stmt = stmt.limit(window[1]).offset(window[0])
        return list(self.db.scalars(stmt).unique()), total

    def page_items(self, params: dict[str, Any], items: list[Any]) -> tuple[list[Any], int]:
        """page() for lists built in memory (settings, the command registry)."""
        window = self._page_window(params)
        if window is None:
            return items, len(items)
        offset, size = window
        return items[offset:offset + size], len(items)

    @staticmethod
    def _page_window(params: dict[str, Any]) -> tuple[int, int] | None:
        """(offset, size) from page/pagesize, None for everything; 431 on bad values."""
        page = params.get("page")
        pagesize = params.get("pagesize")
        if page is not None and page < 1:
            raise InvalidParameter("Page index must be greater than or equal to 1", "page")
        if pagesize is not None and pagesize != -1 and not (1 <= pagesize <= MAX_PAGE_SIZE):
            raise InvalidParameter(f"Page size can't exceed max allowed page size value: {MAX_PAGE_SIZE}", "pagesize")
        if pagesize == -1:
            pagesize = None
        if page is None and pagesize is None:
            return None
        size = pagesize or DEFAULT_PAGE_SIZE
        return ((page or 1) - 1) * size, size

    # ---- async jobs ----------------------------------------------------------------------
    def submit_job(self, handler: str, params: dict[str, Any], *, instance_type: str | None = None,
                   instance_id: str | None = None, queue: str = "default") -> "AsyncJob":
        from secstor.jobs.engine import enqueue

        return enqueue(
            self.db, cmd=self.command.name, handler=handler, params=params,
            account_id=self._caller.account_id if self._caller else None,
            user_id=self._caller.user_id if self._caller else None,
            instance_type=instance_type, instance_id=instance_id, queue=queue, now=self.now,
        )


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=str)
