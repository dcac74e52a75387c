"""HTTP endpoints authorised by a signed transfer ticket alone (no API keys): POST /upload/<ticket>
(browser and CLI uploads of templates, ISOs and volumes) and GET /extract/<token>/<filename>
(extract URLs). The ticket names the kind of object; secstor.services.transfers dispatches on it.

Both stream: an upload is parsed as it arrives and written to the store chunk by chunk, a
download is read from the store chunk by chunk, so memory stays bounded whatever the size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from email.utils import formatdate

import anyio.from_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from secstor.security.tickets import TicketRefused
from secstor.services import transfers
from secstor.services import volume_transfers  # noqa: F401  (registers the volume kind of tickets)

log = logging.getLogger("secstor.transfers")

UPLOAD_FIELD = "file"
# Browsers upload from the management UI's origin: allow it, and the headers the ticket travels in.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "X-signature, X-metadata, X-expires, Content-Type",
    "Access-Control-Max-Age": "86400",
}


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errorcode": status, "errortext": reason}, status_code=status, headers=headers)


# ---- upload -----------------------------------------------------------------------------------

def form_file(body: Iterable[bytes], boundary: bytes, field: str = UPLOAD_FIELD) -> Iterator[bytes]:
    """The content of the form field ``field`` of a multipart body, yielded as the body arrives.
    MalformedUpload if the body is not a complete multipart form holding that field."""
    part: dict[str, bytes] = {}
    header = {"field": b"", "value": b""}
    state = {"wanted": False, "found": False, "ended": False}
    pending: list[bytes] = []

    def on_part_begin() -> None:
        part.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        part[header["field"].decode("latin-1").lower()] = header["value"]
        header["field"] = header["value"] = b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(part.get("content-disposition", b""))
        # Only the first part of that name: a second one must not be appended to the file.
        state["wanted"] = options.get(b"name") == field.encode() and not state["found"]
        state["found"] = state["found"] or state["wanted"]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["wanted"]:
            pending.append(data[start:end])

    def on_part_end() -> None:
        state["wanted"] = False

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end, "on_end": on_end,
    })
    try:
        for chunk in body:
            parser.write(chunk)
            yield from pending
            pending.clear()
        parser.finalize()
    except MultipartParseError as exc:
        raise transfers.MalformedUpload(f"Malformed multipart body: {exc}") from None
    if not state["found"]:
        raise transfers.MalformedUpload(f"The form has no field {field!r} holding the file")
    if not state["ended"]:
        raise transfers.MalformedUpload("The multipart body ended before its closing boundary")


def _boundary(content_type: str) -> bytes | None:
    kind, options = parse_options_header(content_type)
    return options.get(b"boundary") if kind == b"multipart/form-data" else None


async def upload(request: Request) -> Response:
    if request.method == "OPTIONS":  # a browser's CORS preflight
        return Response(status_code=200, headers=CORS_HEADERS)
    runtime = request.app.state.runtime
    ticket_id = request.path_params["ticket"]
    boundary = _boundary(request.headers.get("content-type", ""))
    if not boundary:
        return _error(400, f"Upload the file as a multipart/form-data POST in the field {UPLOAD_FIELD!r}",
                      CORS_HEADERS)
    h = request.headers
    try:
        claim = await run_in_threadpool(transfers.claim_upload, runtime, ticket_id, h.get("x-metadata"),
                                        h.get("x-expires"), h.get("x-signature"))
    except TicketRefused as exc:
        log.warning("upload %s refused: %s", ticket_id, exc.reason)
        return _error(403, exc.reason, CORS_HEADERS)

    stream = request.stream()

    async def next_chunk() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    def body() -> Iterator[bytes]:  # iterated by the store writer, in a worker thread
        while (chunk := anyio.from_thread.run(next_chunk)) is not None:
            yield chunk

    try:
        stored = await run_in_threadpool(transfers.store_upload, runtime, claim, form_file(body(), boundary))
    except transfers.UploadFailed as exc:
        return _error(exc.status, exc.reason, CORS_HEADERS)
    log.info("upload %s stored: %s %s (%s)", ticket_id, claim.kind, stored.name, stored.uuid)
    return JSONResponse({"id": stored.uuid, "status": stored.status}, headers=CORS_HEADERS)


# ---- extract ----------------------------------------------------------------------------------

class RangeNotSatisfiable(Exception):
    pass


def requested_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range ``(first, last)`` a Range header asks for, or None for the whole object (no
    header, another unit, or several ranges, which may be answered whole). RangeNotSatisfiable
    for a malformed range or one that starts past the end."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    first, dash, last = (s.strip() for s in spec.partition("-"))
    if not dash or not (first.isdigit() or (not first and last.isdigit())) or (last and not last.isdigit()):
        raise RangeNotSatisfiable(header)
    if not first:  # the last N bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(size - int(last), 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(header)
    return start, end


async def extract(request: Request) -> Response:
    runtime = request.app.state.runtime
    try:
        source = await run_in_threadpool(transfers.open_extract, runtime, request.path_params["token"])
    except TicketRefused as exc:
        return _error(403, exc.reason)
    except transfers.ExtractGone as exc:
        log.warning("extract URL of a copy that is gone: %s", exc)
        return _error(404, "The template, ISO or volume of this URL no longer exists")
    etag = f'"{source.etag}"'
    last_modified = formatdate(source.modified.timestamp(), usegmt=True)
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": last_modified,
               "Content-Type": "application/octet-stream",
               "Content-Disposition": f'attachment; filename="{source.filename}"'}
    if_range = request.headers.get("if-range")
    try:
        # A Range with an If-Range naming another version is answered with the whole object.
        window = requested_range(request.headers.get("range"), source.size) \
            if if_range in (None, etag, last_modified) else None
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{source.size}", "Accept-Ranges": "bytes"})
    start, end, status = (0, source.size - 1, 200) if window is None else (*window, 206)
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{source.size}"
    length = end - start + 1
    headers["Content-Length"] = str(length)
    if request.method == "HEAD" or length == 0:
        return Response(status_code=status, headers=headers)
    reader = await run_in_threadpool(source.driver.open_reader, source.key, start, length)
    return StreamingResponse(reader, status_code=status, headers=headers)


def transfer_routes() -> list[Route]:
    return [
        Route("/upload/{ticket}", upload, methods=["POST", "OPTIONS"]),
        Route("/extract/{token}/{filename}", extract, methods=["GET", "HEAD"]),
    ]
