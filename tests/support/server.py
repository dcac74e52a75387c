"""A real `secstor serve` process for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class ServerProcess:
    home: Path
    database_url: str
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/client/api"

    @property
    def admin_keys(self) -> dict[str, str]:
        return json.loads((self.home / "admin-keys.json").read_text())

    def start(self) -> "ServerProcess":
        env = {**os.environ, **self.env, "SECSTOR_DATABASE_URL": self.database_url}
        self.log_path = self.home.parent / f"{self.home.name}-serve.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "secstor.cli.main", "serve", "--home", str(self.home), "--port", str(self.port),
             *self.extra_args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_http(f"{self.url}/healthz", proc=self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def cs(self, key: str | None = None, secret: str | None = None, **kwargs):
        from cs import CloudStack

        keys = self.admin_keys
        # cs polls async jobs every 2 s by default: most of a test's wait would be that sleep.
        kwargs.setdefault("poll_interval", 0.1)
        return CloudStack(endpoint=self.api_url, key=key or keys["apikey"], secret=secret or keys["secretkey"],
                          **kwargs)
