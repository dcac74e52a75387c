"""A real moto S3 server process on loopback, for tests that must speak HTTP to S3.

Plain functions (no pytest import) so any conftest can wrap them in a fixture.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server_process(env: dict[str, str] | None = None, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run ``python -m moto.server`` on a free loopback port; yield its endpoint "127.0.0.1:PORT".

    ``env`` adds variables for the server, e.g. INITIAL_NO_AUTH_ACTION_COUNT to turn on
    moto's credential checks.  The process is killed on exit.
    """
    port = free_port()
    # A file, not a pipe: the server logs every request and would block on a full pipe.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    endpoint = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"moto server exited with {proc.returncode}: {log.read().decode(errors='replace')}")
            try:
                urllib.request.urlopen(f"http://{endpoint}/moto-api/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # any HTTP answer means it is serving
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on {endpoint} within {startup_timeout} s") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
