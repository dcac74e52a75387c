"""Format inspection on real images made by qemu-img: what is accepted, what is refused and why."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from secstor.movers.inspect import ImageRejected, inspect_image, inspect_store_object

pytestmark = [
    pytest.mark.nodb,
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) is not installed"),
]

MiB = 1 << 20
SECTOR = 2048
REFERENCES = "images that reference other files are refused"


def qemu_img(*args: str, cwd: Path) -> None:
    subprocess.run(["qemu-img", *args], cwd=cwd, check=True, capture_output=True)


def iso_bytes(sectors: int = 20) -> bytes:
    """A small ISO 9660 image: 16 empty system sectors, a primary volume descriptor, a terminator."""
    pvd = bytearray(SECTOR)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[40:72] = b"SECSTOR_TEST".ljust(32)
    pvd[80:88] = struct.pack("<I", sectors) + struct.pack(">I", sectors)  # volume space size, both-endian
    pvd[128:132] = struct.pack("<H", SECTOR) + struct.pack(">H", SECTOR)  # logical block size
    terminator = bytearray(SECTOR)
    terminator[0:7] = b"\xffCD001\x01"
    return bytes(16 * SECTOR) + bytes(pvd) + bytes(terminator) + bytes((sectors - 18) * SECTOR)


def tar_bytes(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/shadow"
            tar.addfile(info)
    return out.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Every image the tests need, made once (all tiny) in one directory."""
    d = tmp_path_factory.mktemp("images")
    qemu_img("create", "-q", "-f", "raw", "disk.raw", "2M", cwd=d)
    (d / "disk.raw").write_bytes(b"secstor" * 1000 + bytes(2 * MiB - 7000))
    qemu_img("create", "-q", "-f", "qcow2", "disk.qcow2", "16M", cwd=d)
    qemu_img("create", "-q", "-f", "qcow2", "-b", "disk.raw", "-F", "raw", "backed.qcow2", cwd=d)
    qemu_img("create", "-q", "-f", "qcow2", "-o", "data_file=external.raw", "datafile.qcow2", "4M", cwd=d)
    qemu_img("convert", "-O", "vpc", "disk.raw", "dynamic.vhd", cwd=d)
    qemu_img("convert", "-O", "vpc", "-o", "subformat=fixed", "disk.raw", "fixed.vhd", cwd=d)
    qemu_img("convert", "-O", "vhdx", "disk.raw", "disk.vhdx", cwd=d)
    qemu_img("convert", "-O", "vmdk", "disk.raw", "sparse.vmdk", cwd=d)
    qemu_img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "disk.raw", "stream.vmdk", cwd=d)
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", "flat.vmdk", "1M", cwd=d)
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", "split.vmdk", "1M", cwd=d)
    (d / "image.iso").write_bytes(iso_bytes())
    sparse = (d / "sparse.vmdk").read_bytes()
    (d / "appliance.ova").write_bytes(tar_bytes({"appliance.ovf": b"<Envelope/>", "disk1.vmdk": sparse}))
    (d / "no-ovf.ova").write_bytes(tar_bytes({"disk1.vmdk": sparse}))
    (d / "link.ova").write_bytes(tar_bytes({"appliance.ovf": b"<Envelope/>"}, symlink="disk1.vmdk"))
    (d / "escape.ova").write_bytes(tar_bytes({"appliance.ovf": b"<Envelope/>", "../../etc/cron.d/x": b"x"}))
    return d


@pytest.mark.parametrize(
    "name, declared, detected, virtual",
    [
        ("disk.qcow2", "QCOW2", "qcow2", 16 * MiB),
        ("disk.raw", "RAW", "raw", 2 * MiB),
        ("dynamic.vhd", "VHD", "vpc", None),
        ("fixed.vhd", "VHD", "raw", None),
        ("disk.vhdx", "VHDX", "vhdx", 2 * MiB),
        ("sparse.vmdk", "VMDK", "vmdk", 2 * MiB),
        ("stream.vmdk", "vmdk", "vmdk", 2 * MiB),
        ("image.iso", "ISO", "raw", 20 * SECTOR),
        ("appliance.ova", "OVA", "raw", None),
    ],
)
def test_images_of_the_declared_format_are_accepted_with_their_sizes(images, name, declared, detected, virtual):
    info = inspect_image(images / name, declared)
    assert (info.format, info.detected) == (declared.upper(), detected)
    assert info.physical_size == (images / name).stat().st_size
    if virtual is not None:
        assert info.virtual_size == virtual


def test_both_vhd_kinds_report_the_disk_size_not_the_file_size(images):
    dynamic = inspect_image(images / "dynamic.vhd", "VHD")
    fixed = inspect_image(images / "fixed.vhd", "VHD")
    # VHD rounds the disk up to a CHS geometry, identically for both kinds; the fixed file
    # carries a 512-byte footer that is not part of the disk.
    assert fixed.virtual_size == dynamic.virtual_size >= 2 * MiB
    assert fixed.physical_size == fixed.virtual_size + 512


@pytest.mark.parametrize(
    "name, declared, message",
    [
        ("disk.qcow2", "RAW", "declared format RAW does not match the content, which is a qcow2 image"),
        ("sparse.vmdk", "RAW", "declared format RAW does not match the content, which is a vmdk image"),
        ("dynamic.vhd", "RAW", "declared format RAW does not match the content, which is a vpc image"),
        ("fixed.vhd", "RAW", "declared format RAW does not match the content, which is a vpc image"),
        ("disk.vhdx", "RAW", "declared format RAW does not match the content, which is a vhdx image"),
        ("disk.raw", "QCOW2", "declared format QCOW2 does not match the content, which is not a disk container (raw data)"),
        ("disk.qcow2", "VHDX", "declared format VHDX does not match the content, which is a qcow2 image"),
        ("disk.raw", "ISO", "declared format ISO does not match the content: no ISO 9660 volume descriptor"),
        ("disk.qcow2", "ISO", "declared format ISO does not match the content, which is a qcow2 image"),
        ("disk.raw", "OVA", "declared format OVA does not match the content: not a tar archive"),
    ],
)
def test_declared_format_must_match_the_content(images, name, declared, message):
    with pytest.raises(ImageRejected, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        inspect_image(images / name, declared)


def test_raw_declared_file_carrying_a_qcow2_header_is_refused(images, tmp_path):
    # The classic attack: qemu told "raw" would boot it as raw, qemu left to probe would
    # follow the qcow2 header to whatever backing file it names.
    disguised = tmp_path / "disguised.img"
    shutil.copy(images / "backed.qcow2", disguised)
    with pytest.raises(ImageRejected, match="declared format RAW does not match the content, which is a qcow2 image"):
        inspect_image(disguised, "RAW")


def test_qcow2_with_a_backing_file_is_refused(images):
    with pytest.raises(ImageRejected) as err:
        inspect_image(images / "backed.qcow2", "QCOW2")
    assert err.value.reason == f"the qcow2 image has a backing file ('disk.raw'); {REFERENCES}"


def test_qcow2_with_an_external_data_file_is_refused(images):
    with pytest.raises(ImageRejected) as err:
        inspect_image(images / "datafile.qcow2", "QCOW2")
    assert err.value.reason == f"the qcow2 image uses an external data file; {REFERENCES}"


@pytest.mark.parametrize("name, create_type, extent", [("flat.vmdk", "monolithicFlat", "flat-flat.vmdk"), ("split.vmdk", "twoGbMaxExtentFlat", "split-f001.vmdk")])
def test_vmdk_descriptor_referencing_other_files_is_refused(images, name, create_type, extent):
    with pytest.raises(ImageRejected) as err:
        inspect_image(images / name, "VMDK")
    assert err.value.reason == (
        f"the VMDK has createType {create_type}, whose descriptor references other files ('{extent}'); "
        "only monolithicSparse and streamOptimized VMDKs are accepted"
    )


def test_virtual_size_over_the_limit_is_refused(images):
    with pytest.raises(ImageRejected, match=f"^the virtual size {16 * MiB} bytes is larger than the limit of {8 * MiB} bytes$"):
        inspect_image(images / "disk.qcow2", "QCOW2", max_virtual_size=8 * MiB)
    assert inspect_image(images / "disk.qcow2", "QCOW2", max_virtual_size=16 * MiB).virtual_size == 16 * MiB


@pytest.mark.parametrize(
    "name, message",
    [
        ("no-ovf.ova", "the OVA contains no .ovf descriptor"),
        ("link.ova", "the OVA member 'disk1.vmdk' is not a regular file"),
        ("escape.ova", "the OVA member '../../etc/cron.d/x' has an unsafe path"),
    ],
)
def test_unsafe_or_incomplete_ova_is_refused(images, name, message):
    with pytest.raises(ImageRejected) as err:
        inspect_image(images / name, "OVA")
    assert err.value.reason == message


def test_corrupt_image_is_refused_with_qemu_img_reason(tmp_path):
    broken = tmp_path / "broken.qcow2"
    broken.write_bytes(b"QFI\xfb" + struct.pack(">I", 3) + bytes(200))  # header says qcow2 v3, the rest is nonsense
    with pytest.raises(ImageRejected, match="^qemu-img cannot read the image: "):
        inspect_image(broken, "QCOW2")


def test_unknown_declared_format_is_refused(images):
    with pytest.raises(ImageRejected, match="^format VDI is not supported; use one of QCOW2, RAW, VHD, VHDX, VMDK, OVA, ISO$"):
        inspect_image(images / "disk.raw", "VDI")


def test_store_object_on_a_local_store_is_inspected_in_place(images, store):
    store.put("template/tmpl/2/201/201.qcow2", [(images / "disk.qcow2").read_bytes()])
    info = inspect_store_object(store, "template/tmpl/2/201/201.qcow2", "QCOW2")
    assert (info.format, info.virtual_size) == ("QCOW2", 16 * MiB)
    store.put("template/tmpl/2/202/202.img", [(images / "backed.qcow2").read_bytes()])
    with pytest.raises(ImageRejected, match="which is a qcow2 image"):
        inspect_store_object(store, "template/tmpl/2/202/202.img", "RAW")


def test_store_object_on_s3_is_inspected_through_a_temporary_copy(images, tmp_path):
    from secstor.stores import S3Driver
    from tests.stores.helpers import s3_client, s3_config
    from tests.support.moto import moto_server_process

    with moto_server_process() as endpoint:
        s3_client(endpoint).create_bucket(Bucket="images")
        with S3Driver(s3_config(endpoint, "images")) as driver:
            driver.put("template/tmpl/2/203/203.vhdx", [(images / "disk.vhdx").read_bytes()])
            info = inspect_store_object(driver, "template/tmpl/2/203/203.vhdx", "VHDX", scratch_dir=tmp_path)
            assert (info.format, info.virtual_size) == ("VHDX", 2 * MiB)
            with pytest.raises(ImageRejected, match="declared format QCOW2 does not match the content, which is a vhdx image"):
                inspect_store_object(driver, "template/tmpl/2/203/203.vhdx", "QCOW2", scratch_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # the temporary copies are gone
