"""`secstor template`: seed a system VM template into a store; register, list and delete templates.

`seed` works on the database and the store directly (no API server, no job), as CloudStack's
cloud-install-sys-tmplt does. The other commands are thin wrappers over the API that wait with
a progress bar, like `secstor api`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from secstor.cli.api_cmd import (
    ApiKeyOpt, SecretKeyOpt, finished_job, item_table, open_client, poll_with_progress, result_console,
)
from secstor.cli.client import ApiClient, ApiError, ClientError, unwrap
from secstor.cli.common import ConfigOpt, DbOpt, HomeOpt, build_config

app = typer.Typer(help="Templates: seed system VM templates into a store; register, list and delete.",
                  no_args_is_help=True)

# --url is the image's URL here, so the API endpoint gets its own flag.
ApiUrlOpt = Annotated[Optional[str], typer.Option("--api-url", envvar="SECSTOR_API_URL", help="API endpoint. "
                                                  "Default: <public_url>/client/api from the configuration.")]
FINISHED = ("DOWNLOADED", "DOWNLOAD_ERROR", "ABANDONED")
LIST_COLUMNS = ("id", "name", "format", "templatetype", "zonename", "status", "isready", "ispublic", "size")


@app.command("seed")
def seed(
    name: Annotated[str, typer.Option("--name", help="Template name, e.g. systemvm-kvm-4.19.0.")],
    file: Annotated[Optional[Path], typer.Option("--file", help="The image file to install.")] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="The http, https or ftp URL to download the image "
                                               "from (same safety rules as registerTemplate).")] = None,
    format: Annotated[str, typer.Option("--format", help="QCOW2, RAW, VHD, VHDX, VMDK or OVA.")] = "QCOW2",
    hypervisor: Annotated[str, typer.Option("--hypervisor", help="KVM, XenServer, VMware ...")] = "KVM",
    checksum: Annotated[Optional[str], typer.Option("--checksum", help="{ALG}hex (bare hex: MD5). The image is "
                                                    "refused unless it matches.")] = None,
    store: Annotated[Optional[str], typer.Option("--store", help="Image store name or id.")] = None,
    zone: Annotated[Optional[str], typer.Option("--zone", help="Zone name or id: its store with most free space "
                                                "(not with --store). Default: the only zone.")] = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Install a system VM template straight into an image store, verified.

    The bytes are written once while hashed (and compared with --checksum), the format is
    inspected, template.properties is written and the copy is Ready: templatetype SYSTEM,
    public, owned by admin. Seeding the same name and checksum into a store that holds it
    reports "already installed" and exits 0. On any failure nothing is stored and no row is
    left; exit status 1 (2 for invalid options).

    The other stores of the zone receive the template through the periodic template sync.
    """
    from secstor.domain.errors import InvalidParameter, OperationFailed
    from secstor.services.bootstrap import bootstrap, open_runtime
    from secstor.services.template_seed import SeedRequest, seed as seed_template

    console = Console(stderr=True)
    if store and zone:
        typer.echo("Error: give --store or --zone, not both", err=True)
        raise typer.Exit(2)
    try:
        runtime = open_runtime(build_config(home, config, database_url))
    except (OSError, ValueError) as exc:
        typer.echo(f"Error: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
    request = SeedRequest(name=name, format=format, hypervisor=hypervisor, file=file, url=url, checksum=checksum,
                          store=store, zone=zone)
    try:
        bootstrap(runtime)  # an installation seeded before its first `serve` gets its admin and zone
        columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(f"seeding {name}", total=100)
            outcome = seed_template(runtime, request, lambda pct: bar.update(task, completed=pct))
    except InvalidParameter as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except OperationFailed as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        runtime.close()
    if outcome.already_installed:
        typer.echo(f"System template {name} ({outcome.template_uuid}) is already installed on image store "
                   f"{outcome.store_name}.")
    else:
        typer.echo(f"Installed system template {name} ({outcome.template_uuid}) on image store {outcome.store_name}: "
                   f"{outcome.install_path}, checksum {outcome.checksum}.")


def _zone_id(client: ApiClient, zone: str) -> str:
    """A zone's id from its name or id."""
    zones = unwrap(client.call("listZones", {})).get("zone", [])
    for z in zones:
        if zone in (z["id"], z["name"]):
            return z["id"]
    raise ClientError(f"no zone named {zone}")


def _templates(client: ApiClient, template_id: str, iso: bool) -> list[dict[str, Any]]:
    command, key, filter_param = ("listIsos", "iso", "isofilter") if iso else ("listTemplates", "template",
                                                                               "templatefilter")
    return unwrap(client.call(command, {"id": template_id, filter_param: "self"})).get(key, [])


def _download_progress(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]] | None, tuple | None]:
    """(the items once every copy finished, the mean downloadPercent of the copies)."""
    details = [d for item in items for d in item.get("downloaddetails", [])]
    if details and all(d["downloadState"] in FINISHED for d in details):
        return items, None
    pcts = [float(d.get("downloadPercent", 0)) for d in details]
    return None, ((sum(pcts) / len(pcts)), 100.0, "percent") if pcts else None


def _fail(exc: Exception) -> None:
    text = f"Error {exc.errorcode}: {exc.errortext}" if isinstance(exc, ApiError) else f"Error: {exc}"
    typer.echo(text, err=True)
    raise typer.Exit(1) from None


@app.command("register")
def register(
    name: Annotated[str, typer.Option("--name", help="Template name.")],
    url: Annotated[str, typer.Option("--url", help="http, https or ftp URL of the image.")],
    zone: Annotated[str, typer.Option("--zone", help="Zone name or id; -1 for every zone.")],
    format: Annotated[str, typer.Option("--format", help="QCOW2, RAW, VHD, VHDX, VMDK or OVA.")] = "QCOW2",
    hypervisor: Annotated[str, typer.Option("--hypervisor")] = "KVM",
    checksum: Annotated[Optional[str], typer.Option("--checksum", help="{ALG}hex; bare hex is MD5.")] = None,
    public: Annotated[bool, typer.Option("--public", help="Usable by every account.")] = False,
    iso: Annotated[bool, typer.Option("--iso", help="Register an ISO (format and hypervisor ignored).")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once registered; do not wait for the "
                                          "download.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the download (0: no "
                                           "limit).")] = 0,
    api_url: ApiUrlOpt = None,
    apikey: ApiKeyOpt = None,
    secretkey: SecretKeyOpt = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Register a template (or --iso) and wait, with a progress bar, until every copy is downloaded.

    Exits 1 if a copy ends in error (its status says why)."""
    try:
        with open_client(api_url, apikey, secretkey, home, config) as client:
            params = {"name": name, "displaytext": name, "url": url, "ispublic": str(public).lower(),
                      "zoneid": zone if zone == "-1" else _zone_id(client, zone)}
            if checksum:
                params["checksum"] = checksum
            if iso:
                reply = unwrap(client.call("registerIso", params))["iso"]
            else:
                params.update(format=format, hypervisor=hypervisor)
                reply = unwrap(client.call("registerTemplate", params))["template"]
            template_id = reply[0]["id"]
            if not no_wait:
                reply = poll_with_progress(
                    f"downloading {name}", lambda: _download_progress(_templates(client, template_id, iso)), timeout,
                    what=f"the download of {template_id}",
                    see=f"secstor template list --id {template_id}" + (" --iso" if iso else ""))
    except (ApiError, ClientError) as exc:
        _fail(exc)
    result_console().print(item_table([{c: t.get(c) for c in LIST_COLUMNS} for t in reply]))
    failed = [t["status"] for t in reply for d in t.get("downloaddetails", []) if d["downloadState"] != "DOWNLOADED"]
    if not no_wait and failed:
        typer.echo(f"Error: download failed: {failed[0]}", err=True)
        raise typer.Exit(1)


@app.command("list")
def list_templates(
    filter: Annotated[str, typer.Option("--filter", help="templatefilter/isofilter: self, featured, community, "
                                        "executable, all ...")] = "self",
    template_id: Annotated[Optional[str], typer.Option("--id")] = None,
    name: Annotated[Optional[str], typer.Option("--name")] = None,
    iso: Annotated[bool, typer.Option("--iso", help="List ISOs.")] = False,
    api_url: ApiUrlOpt = None,
    apikey: ApiKeyOpt = None,
    secretkey: SecretKeyOpt = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List templates (or --iso) with their status per zone."""
    command, key, filter_param = ("listIsos", "iso", "isofilter") if iso else ("listTemplates", "template",
                                                                               "templatefilter")
    params = {filter_param: filter, "id": template_id, "name": name}
    try:
        with open_client(api_url, apikey, secretkey, home, config) as client:
            items = unwrap(client.call(command, {k: v for k, v in params.items() if v is not None})).get(key, [])
    except (ApiError, ClientError) as exc:
        _fail(exc)
    if not items:
        typer.echo("No templates.")
        return
    result_console().print(item_table([{c: t.get(c) for c in LIST_COLUMNS} for t in items]))


@app.command("delete")
def delete(
    template_id: Annotated[str, typer.Argument(help="Template (or ISO) id.", show_default=False)],
    zone: Annotated[Optional[str], typer.Option("--zone", help="Only this zone's copies (name or id).")] = None,
    iso: Annotated[bool, typer.Option("--iso", help="Delete an ISO.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait (0: no limit).")] = 0,
    api_url: ApiUrlOpt = None,
    apikey: ApiKeyOpt = None,
    secretkey: SecretKeyOpt = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Delete a template (or --iso) from every store, waiting with a progress bar."""
    command = "deleteIso" if iso else "deleteTemplate"
    try:
        with open_client(api_url, apikey, secretkey, home, config) as client:
            params = {"id": template_id}
            if zone:
                params["zoneid"] = _zone_id(client, zone)
            jobid = str(unwrap(client.call(command, params))["jobid"])
            finished_job(client, command, jobid, timeout)
    except (ApiError, ClientError) as exc:
        _fail(exc)
    typer.echo(f"Deleted {template_id}.")
