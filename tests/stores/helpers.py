"""Helpers for the store tests: real tmpfs mounts and S3 clients/configs for the moto server."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from secstor.stores import S3Config, is_mount_point

MiB = 1 << 20


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "16m") -> Iterator[Path]:
    """Mount a real tmpfs at ``path`` for the duration of the block."""
    if os.geteuid() != 0:
        pytest.skip("mounting tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        unmount(path)


def unmount(path: Path) -> None:
    """Unmount everything stacked on ``path``; lazily if a stray open file keeps it busy."""
    while is_mount_point(path):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def s3_client(endpoint: str, access_key: str = "testing", secret_key: str = "testing"):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def s3_config(endpoint: str, bucket: str, **overrides) -> S3Config:
    # 5 MiB parts (the S3 minimum) keep multipart tests small and fast.
    settings = dict(
        endpoint=endpoint, bucket=bucket, access_key="testing", secret_key="testing",
        use_https=False, part_size=5 * MiB,
    )
    settings.update(overrides)
    return S3Config(**settings)
