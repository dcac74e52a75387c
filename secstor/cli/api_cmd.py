"""`secstor api COMMAND key=value ...`: a built-in cloudmonkey.

Signs and calls any API command, prints the answer as a table or as the raw JSON body, and
waits for async jobs with a progress bar. Results go to stdout; progress and errors go to
stderr, so `--output json` can be piped.
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from typing import Annotated, Any, Callable, Optional

import typer
from rich import filesize
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from secstor.cli.client import ApiClient, ApiError, ClientError, default_api_url, resolve_credentials, unwrap
from secstor.cli.common import ConfigOpt, HomeOpt, build_config

# Seconds between job polls: quick at first (most jobs are short), then cs's 2 s default.
FIRST_POLL = 0.2
MAX_POLL = 2.0


ApiUrlOpt = Annotated[Optional[str], typer.Option("--url", envvar="SECSTOR_API_URL", help="API endpoint. Default: "
                                                   "<public_url>/client/api from the configuration, where "
                                                   "public_url defaults to http://<host>:<port>.")]
ApiKeyOpt = Annotated[Optional[str], typer.Option("--apikey", envvar="SECSTOR_API_KEY",
                                                  help="API key. Default: <home>/admin-keys.json.")]
SecretKeyOpt = Annotated[Optional[str], typer.Option("--secretkey", envvar="SECSTOR_SECRET_KEY",
                                                     help="Secret key. Default: <home>/admin-keys.json.")]


def open_client(url: str | None, apikey: str | None, secretkey: str | None, home, config) -> ApiClient:
    """A signed client from the options; exits 1 with the reason when the configuration or the
    keys cannot be read."""
    try:
        cfg = build_config(home, config, None)
    except (OSError, ValueError) as exc:  # an unreadable or invalid configuration file
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        creds = resolve_credentials(apikey, secretkey, cfg.home / "admin-keys.json")
    except ClientError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    return ApiClient(url or default_api_url(cfg.resolved_public_url), creds)


class Output(str, Enum):
    table = "table"
    json = "json"


def api(
    ctx: typer.Context,
    command: Annotated[str, typer.Argument(help="API command name, e.g. listImageStores.", show_default=False)],
    url: ApiUrlOpt = None,
    apikey: ApiKeyOpt = None,
    secretkey: SecretKeyOpt = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="table, or json (the raw response body).")]
    = Output.table,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="For async commands: print the job id and "
                                          "return instead of waiting for the job.")] = False,
    job_timeout: Annotated[float, typer.Option("--job-timeout", help="Seconds to wait for an async job "
                                               "(0: no limit). The job itself goes on after a timeout.")] = 0,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Call any API command, signed, and print the result: secstor api COMMAND \\[key=value ...]

    Parameters are key=value words, passed through as given: lists are
    comma-separated (destpools=ID1,ID2); maps use CloudStack's indexed form
    (details[0].key=K details[0].value=V).

    Keys come from --apikey/--secretkey, else SECSTOR_API_KEY/SECSTOR_SECRET_KEY,
    else <home>/admin-keys.json (written by the first `secstor serve`).

    Async commands are followed to the end with a progress bar (polling
    queryAsyncJobResult). An API error or a failed job prints
    "Error <code>: <text>" on stderr and exits with status 1.

    Examples:

      secstor api listZones

      secstor api listImageStores name=default --output json

      secstor api addImageStore provider=Local name=second \\
          url=file:///var/lib/secstor/second zoneid=ZONE_ID

      secstor api updateImageStore id=STORE_ID readonly=true

      secstor api deleteTemplate id=TEMPLATE_ID --no-wait
    """
    params = parse_pairs(ctx.args)
    try:
        with open_client(url, apikey, secretkey, home, config) as client:
            body = client.call(command, params)
            reply = unwrap(body)
            if is_job_submission(reply) and not no_wait:
                body = finished_job(client, command, str(reply["jobid"]), job_timeout)
                reply = unwrap(body).get("jobresult", {})
    except ApiError as exc:
        typer.echo(f"Error {exc.errorcode}: {exc.errortext}", err=True)
        raise typer.Exit(1) from None
    except ClientError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None

    if output is Output.json:
        typer.echo(json.dumps(body, indent=2))
    else:
        render(reply, result_console())


def parse_pairs(words: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {word!r}")
        if key in params:
            raise typer.BadParameter(f"parameter {key!r} given twice; join list values with commas")
        params[key] = value
    return params


# ---- async jobs ------------------------------------------------------------------------------

def is_job_submission(reply: Any) -> bool:
    """An async command's immediate answer: the job id, plus the new object's id for creates.
    (queryAsyncJobResult also carries a jobid, among many other fields.)"""
    return isinstance(reply, dict) and "jobid" in reply and set(reply) <= {"jobid", "id"}


def job_progress(job: dict[str, Any]) -> tuple[float, float, str] | None:
    """(done, total, unit) from a running job, if it reports any.

    Prefers bytes, then objects, from a ``progress`` object or the job's own fields
    (``bytesdone``/``bytestotal``, ``objectsdone``/``objectsremaining`` ...; underscores and
    case ignored); else ``jobprocstatus`` read as a percentage.
    """
    fields: dict[str, Any] = {}
    for source in (job, job.get("progress")):
        if isinstance(source, dict):
            fields.update({k.replace("_", "").lower(): v for k, v in source.items()})
    for unit in ("bytes", "objects"):
        done = _number(fields.get(f"{unit}done"))
        total = _number(fields.get(f"{unit}total"))
        remaining = _number(fields.get(f"{unit}remaining"))
        if total is None and done is not None and remaining is not None:
            total = done + remaining
        if done is not None and total:
            return done, total, unit
    percent = _number(job.get("jobprocstatus"))
    if percent and 0 < percent <= 100:
        return percent, 100.0, "percent"
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _progress_detail(done: float, total: float, unit: str) -> str:
    if unit == "bytes":
        return f"{filesize.decimal(int(done))} / {filesize.decimal(int(total))}"
    if unit == "objects":
        return f"{int(done)} / {int(total)} objects"
    return ""


def wait_for_job(client: ApiClient, command: str, jobid: str, timeout: float) -> dict[str, Any]:
    """Poll queryAsyncJobResult until the job ends; return that final raw body."""

    def poll() -> tuple[dict[str, Any] | None, tuple[float, float, str] | None]:
        body = client.call("queryAsyncJobResult", {"jobid": jobid})
        job = unwrap(body)
        return (body if job.get("jobstatus", 0) != 0 else None), job_progress(job)

    return poll_with_progress(f"{command} job {jobid}", poll, timeout, what=f"job {jobid}",
                              see=f"secstor api queryAsyncJobResult jobid={jobid}")


def finished_job(client: ApiClient, command: str, jobid: str, timeout: float) -> dict[str, Any]:
    """Wait for a job; its final raw body if it succeeded, else ApiError with its error."""
    body = wait_for_job(client, command, jobid, timeout)
    job = unwrap(body)
    if job.get("jobstatus") != 1:  # 2 failed, 3 cancelled
        result = job.get("jobresult") or {}
        raise ApiError(200, int(result.get("errorcode", job.get("jobresultcode", 530))),
                       str(result.get("errortext", "job failed")), body)
    return body


def poll_with_progress(description: str, poll: Callable[[], tuple[Any, tuple[float, float, str] | None]],
                       timeout: float, *, what: str, see: str) -> Any:
    """Call ``poll`` (-> (final result or None, (done, total, unit) or None)) with a growing
    interval and a progress bar on stderr until it returns a result. When the user stops
    waiting (timeout, Ctrl-C) they are told ``what`` goes on and the command to ``see`` it."""
    deadline = time.monotonic() + timeout if timeout > 0 else None
    interval = FIRST_POLL
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=None, detail="")
            while True:
                result, progress = poll()
                if result is not None:
                    return result
                if progress:
                    done, total, unit = progress
                    bar.update(task, completed=done, total=total, detail=_progress_detail(done, total, unit))
                if deadline is not None and time.monotonic() > deadline:
                    raise ClientError(f"{what} still running after {timeout:g} s; it goes on, see `{see}`")
                time.sleep(interval)
                interval = min(interval * 1.5, MAX_POLL)
    except KeyboardInterrupt:
        typer.echo(f"Stopped waiting; {what} goes on. See: {see}", err=True)
        raise typer.Exit(130) from None


# ---- table output ----------------------------------------------------------------------------

def result_console() -> Console:
    # Piped output must not wrap cells mid-value: give tables all the width they need.
    return Console(width=None if sys.stdout.isatty() else 1_000_000)


def cell(value: Any) -> Text:
    """A value as the user typed it: true/false, numbers, text; nested values as compact JSON."""
    if value is None:
        return Text("")
    if isinstance(value, bool):
        return Text("true" if value else "false")
    if isinstance(value, (dict, list)):
        return Text(json.dumps(value, separators=(",", ":"), sort_keys=False))
    return Text(str(value))


def render(reply: Any, console: Console) -> None:
    """A list as one row per item; one object (or any other answer) as key/value rows."""
    if not isinstance(reply, dict):
        console.print(cell(reply))
        return
    lists = {k: v for k, v in reply.items() if isinstance(v, list) and k != "count"}
    if "count" in reply or (lists and len(lists) == len(reply)):
        items = [item for values in lists.values() for item in values if isinstance(item, dict)]
        count = reply.get("count", len(items))
        if not items:
            # {} is CloudStack's empty list; {"count": N} a page past the end.
            console.print(f"No items on this page (count {count})." if count else "No items.")
            return
        shown = f"{len(items)} of {count}" if count != len(items) else str(count)
        console.print(Text(f"{', '.join(lists)}: {shown}", style="bold"))
        console.print(item_table(items))
        return
    if len(reply) == 1:
        (name, obj), = reply.items()
        if isinstance(obj, dict):
            console.print(Text(name, style="bold"))
            console.print(key_value_table(obj))
            return
    console.print(key_value_table(reply))


def item_table(items: list[dict[str, Any]]) -> Table:
    columns: dict[str, None] = {}
    for item in items:
        columns.update(dict.fromkeys(item))
    table = Table()
    for name in columns:
        table.add_column(name, no_wrap=True)
    for item in items:
        table.add_row(*(cell(item.get(name)) for name in columns))
    return table


def key_value_table(obj: dict[str, Any]) -> Table:
    table = Table(show_header=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value")
    for key, value in obj.items():
        table.add_row(Text(key), cell(value))
    return table
