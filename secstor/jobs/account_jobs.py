"""Job handler of deleteAccount's clean-up of what the account owned."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from secstor.api.results import ObjectResult
from secstor.jobs.handlers import JobContext, job_handler
from secstor.services import account_cleanup


@job_handler(account_cleanup.CLEANUP_HANDLER)
def clean_up_account(jctx: JobContext, params: dict[str, Any]) -> ObjectResult:
    counts = account_cleanup.clean_up_account(jctx.runtime, params["account_id"], jctx.log)
    return ObjectResult("accountcleanup", {"accountid": params["account_uuid"], **asdict(counts)})
