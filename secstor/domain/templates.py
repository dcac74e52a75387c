"""Templates and ISOs: status strings, list-filter visibility and placement (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

from secstor.domain.capacity import StoreFields, stores_for_new_data
from secstor.domain.errors import InvalidParameter
from secstor.domain.states import READABLE_COPY_STATES, DownloadState, ObjectInStoreState

FORMATS = ("QCOW2", "RAW", "VHD", "VHDX", "VMDK", "OVA", "ISO")
TEMPLATE_TYPES = ("USER", "SYSTEM", "BUILTIN", "ROUTING")
# Template types that every store of a zone holds, like public and featured templates.
REPLICATED_TYPES = ("SYSTEM", "BUILTIN", "ROUTING")

FILTERS = ("featured", "self", "selfexecutable", "shared", "sharedexecutable", "executable", "community", "all")


@dataclass(frozen=True)
class Visibility:
    """Which templates a templatefilter/isofilter shows to a caller.

    ``own``: the caller's own. ``shared``: others' templates shared with the caller through a
    launch permission. ``public``: None (no public template of others), "featured",
    "community" (public, not featured) or "any". ``ready_only``: CloudStack lists only
    templates with a Ready copy for these filters. SYSTEM templates are never featured nor
    community templates (Marvin checks that), and only admins see them at all.
    """

    own: bool
    public: str | None
    ready_only: bool
    shared: bool = False
    everything: bool = False

    @property
    def system_listed(self) -> bool:
        return self.public not in ("featured", "community")


_VISIBILITY = {
    "featured": Visibility(own=False, public="featured", ready_only=True),
    "self": Visibility(own=True, public=None, ready_only=False),
    "selfexecutable": Visibility(own=True, public=None, ready_only=True),
    "shared": Visibility(own=False, public=None, ready_only=False, shared=True),
    "sharedexecutable": Visibility(own=True, public=None, ready_only=True, shared=True),
    "executable": Visibility(own=True, public="any", ready_only=False, shared=True),
    "community": Visibility(own=False, public="community", ready_only=True),
    "all": Visibility(own=True, public="any", ready_only=False, shared=True, everything=True),
}


def visibility(filter_name: str, param: str, *, is_admin: bool) -> Visibility:
    """The visibility of a filter value; 431 naming ``param`` for an unknown value or for
    ``all`` asked by a non-admin (CloudStack's message)."""
    name = filter_name.strip().lower()
    if name not in _VISIBILITY:
        raise InvalidParameter(f"Invalid {param} {filter_name}: valid values are {', '.join(FILTERS)}", param)
    if name == "all" and not is_admin:
        raise InvalidParameter("Filter all can be specified by admin only", param)
    return _VISIBILITY[name]


def status_text(download_state: str, pct: int, error_text: str | None, state: str, *, is_iso: bool) -> str:
    """CloudStack's ``status`` of one copy (TemplateJoinDaoImpl)."""
    if download_state == DownloadState.DOWNLOADED.value:
        return "Successfully Installed" if is_iso else "Download Complete"
    if download_state == DownloadState.DOWNLOAD_IN_PROGRESS.value and pct < 100:
        return f"{pct}% Downloaded"
    if download_state in (DownloadState.DOWNLOAD_IN_PROGRESS.value, DownloadState.UPLOADED.value):
        return "Installing ISO" if is_iso else "Installing Template"
    return error_text or _UPLOAD_STATUS.get(download_state, state)


# An uploaded copy's status names the template's upload state, as CloudStack's does.
_UPLOAD_STATUS = {DownloadState.NOT_UPLOADED.value: "NotUploaded",
                  DownloadState.UPLOAD_IN_PROGRESS.value: "UploadInProgress",
                  DownloadState.UPLOAD_ERROR.value: "UploadError"}


def _rank(download_state: str, pct: int) -> tuple[int, int]:
    order = {DownloadState.DOWNLOADED.value: 3, DownloadState.DOWNLOAD_IN_PROGRESS.value: 2,
             DownloadState.NOT_DOWNLOADED.value: 1}
    return order.get(download_state, 0), pct


R = TypeVar("R")


def representative(copies: Sequence[R], key) -> R:
    """The copy whose status speaks for a zone: a downloaded one, else the most advanced
    download, else a failed one. ``key(copy) -> (download_state, pct)``."""
    return max(copies, key=lambda c: _rank(*key(c)))


def is_ready(state: str) -> bool:
    """Whether a copy in this state makes its template ready (a copy being migrated still does)."""
    return state in READABLE_COPY_STATES


def replicated(*, is_public: bool, featured: bool, template_type: str) -> bool:
    """Whether every eligible store of a zone holds the template (else one store does)."""
    return is_public or featured or template_type in REPLICATED_TYPES


S = TypeVar("S", bound=StoreFields)


def stores_to_receive(stores: Sequence[S], *, replicate: bool, algorithm: str, threshold: float) -> list[S]:
    """The stores of one zone that get a new template: every eligible store for public,
    featured and system templates, the first one ``image.store.allocation.algorithm`` picks
    for a private one. Read-only and over-threshold stores never receive it (see capacity)."""
    candidates = stores_for_new_data(stores, algorithm, threshold)
    return candidates if replicate else candidates[:1]


_EXTENSIONS = {"QCOW2": "qcow2", "RAW": "raw", "VHD": "vhd", "VHDX": "vhdx", "VMDK": "vmdk", "OVA": "ova", "ISO": "iso"}


def install_dir(account_id: int, template_id: int) -> str:
    """CloudStack's on-store layout: template/tmpl/<account id>/<template id>/."""
    return f"template/tmpl/{account_id}/{template_id}"


def install_key(account_id: int, template_id: int, file_uuid: str, fmt: str) -> str:
    return f"{install_dir(account_id, template_id)}/{file_uuid}.{_EXTENSIONS[fmt]}"


def template_properties(*, filename: str, template_id: int, uniquename: str, description: str | None,
                        is_public: bool, fmt: str, physical_size: int, virtual_size: int, checksum: str,
                        requireshvm: bool) -> str:
    """The template.properties file CloudStack's secondary storage keeps next to each image,
    so a store can be read (or re-imported) without the database."""
    ext = _EXTENSIONS[fmt]
    lines = [
        f"filename={filename}",
        f"id={template_id}",
        f"uniquename={uniquename}",
        f"description={(description or '').replace(chr(10), ' ')}",
        f"public={str(is_public).lower()}",
        f"hvm={str(requireshvm).lower()}",
        f"checksum={checksum}",
        f"format={fmt}",
        f"{ext}=true",
        f"{ext}.filename={filename}",
        f"{ext}.size={physical_size}",
        f"{ext}.virtualsize={virtual_size}",
        f"size={physical_size}",
        f"physicalsize={physical_size}",
        f"virtualsize={virtual_size}",
    ]
    return "\n".join(lines) + "\n"
