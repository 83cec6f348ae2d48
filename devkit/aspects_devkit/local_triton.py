"""Run a real Triton server locally: the ``tritonserver`` binary shipped by nvidia-pytriton.

For tests, benchmarks and the embedded demo on machines without Docker or a GPU
(architecture §6).  The server runs from its own virtual environment (``.venv-server``: pytriton,
onnxruntime, numpy<2) so the Python backend's stub sees that environment's packages.

    with LocalTriton(repository) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

Only the standard library is used here; the thin client stays light.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from aspects_devkit.errors import LocalServerError

from .commands import Command
from .commands import main as run_commands
from .processes import LOG_TAIL_LINES, free_port, tail_lines

ENV_SERVER_VENV = "ASPECTS_SERVER_VENV"
DEFAULT_SERVER_VENV_NAME = ".venv-server"
# One Python-backend shared-memory region per model instance; it must hold a whole batch
# of inputs + outputs: 16 x 11 x 256 x 256 FP32 logits are 44 MiB, 16 UINT8 3 x 1024 x 1024
# stacks 48 MiB (it grows when needed).  /dev/shm is tmpfs, so untouched pages cost nothing.
SHM_DEFAULT_BYTES = 256 * 1024 * 1024
SHM_GROWTH_BYTES = 64 * 1024 * 1024
SHM_DIR = "/dev/shm"
ModelControlMode = Literal["none", "explicit", "poll"]


def find_repo_root(start: Path | None = None) -> Path | None:
    """The nearest directory holding ``pyproject.toml`` above this file, else above cwd."""
    starts = [Path(__file__).resolve().parent] if start is None else [Path(start).resolve()]
    if start is None:
        starts.append(Path.cwd().resolve())
    for begin in starts:
        for parent in (begin, *begin.parents):
            if (parent / "pyproject.toml").is_file():
                return parent
    return None


def find_server_venv(explicit: Path | str | None = None) -> Path:
    """The server virtual environment: explicit path, $ASPECTS_SERVER_VENV, or the repo's."""
    if explicit is None:
        explicit = os.environ.get(ENV_SERVER_VENV) or None
    if explicit is None:
        root = find_repo_root()
        if root is None:
            raise LocalServerError(
                "cannot find the server environment: no pyproject.toml above this package or "
                f"the current directory; set {ENV_SERVER_VENV} to the venv holding nvidia-pytriton"
            )
        explicit = root / DEFAULT_SERVER_VENV_NAME
    venv = Path(explicit).expanduser().absolute()
    if not (venv / "bin" / "python").exists():
        raise LocalServerError(
            f"{venv} is not a virtual environment; create it with scripts/setup_envs.sh "
            f"or point {ENV_SERVER_VENV} at one with nvidia-pytriton==0.7.0 installed"
        )
    return venv


def _pytriton_dir(venv: Path) -> tuple[Path, str]:
    """(``site-packages/pytriton`` dir, python 'X.Y') of the server venv."""
    for site in sorted((venv / "lib").glob("python3.*/site-packages")):
        pkg = site / "pytriton"
        if (pkg / "tritonserver" / "bin" / "tritonserver").is_file():
            return pkg, site.parent.name.removeprefix("python")
    raise LocalServerError(
        f"no pytriton/tritonserver/bin/tritonserver in {venv}; install nvidia-pytriton==0.7.0 "
        "into it (scripts/setup_envs.sh)"
    )


# Log lines that are expected on a machine without a GPU (architecture §6).
_HARMLESS = re.compile(r"CUDA|Cuda|cuda|NVML|DCGM|pinned memory")


def _log_errors(path: Path, limit: int = 8, width: int = 500) -> str:
    """The log's error lines (``E...`` and load failures), minus the harmless CPU-only ones."""
    found: list[str] = []
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if (
                    line.startswith("E") or "failed to load" in line or line.startswith("error:")
                ) and not _HARMLESS.search(line):
                    found.append(line.rstrip()[:width])
    except OSError:
        return ""
    return "\n".join(found[:limit])


def _port_clash(message: str) -> bool:
    return "already in use" in message or "Address in use" in message


_LIVE: weakref.WeakSet[LocalTriton] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # safety net: never leave a server behind
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(timeout=5.0)


class LocalTriton:
    """A tritonserver process on 127.0.0.1 serving ``repository``; a context manager."""

    def __init__(
        self,
        repository: Path | str,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        host: str = "127.0.0.1",
        model_control_mode: ModelControlMode = "none",
        load_models: Sequence[str] = (),
        model_config_name: str | None = None,
        server_venv: Path | str | None = None,
        log_path: Path | str | None = None,
        log_verbose: int = 0,
        shm_default_byte_size: int = SHM_DEFAULT_BYTES,
        shm_growth_byte_size: int = SHM_GROWTH_BYTES,
        ready_timeout: float = 120.0,
        exit_timeout: int = 10,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.repository = Path(repository).absolute()
        self.host = host
        self._auto_ports = not (http_port or grpc_port or metrics_port)
        self._requested_ports = (http_port, grpc_port, metrics_port)
        self._pick_ports()
        self.model_control_mode = model_control_mode
        self.load_models = tuple(load_models)
        self.model_config_name = model_config_name
        self.server_venv = find_server_venv(server_venv)
        self._explicit_log = Path(log_path).absolute() if log_path is not None else None
        self.log_verbose = log_verbose
        self.shm_default_byte_size = shm_default_byte_size
        self.shm_growth_byte_size = shm_growth_byte_size
        self.ready_timeout = ready_timeout
        self.exit_timeout = exit_timeout
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log_path: Path | None = self._explicit_log
        self.startup_seconds: float | None = None
        self._last_log_tail: str | None = None
        # unique per server (python-backend shm region prefix): stop() unlinks what a
        # killed server left in SHM_DIR
        self.shm_prefix = f"aspects{os.getpid()}_{uuid.uuid4().hex[:8]}_"

    def _pick_ports(self) -> None:
        http_port, grpc_port, metrics_port = self._requested_ports
        self.http_port = http_port or free_port(self.host)
        self.grpc_port = grpc_port or free_port(self.host)
        self.metrics_port = metrics_port or free_port(self.host)

    # --- addresses ----------------------------------------------------------------------

    @property
    def grpc_url(self) -> str:
        """``host:port`` for ``tritonclient.grpc.InferenceServerClient``."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the HTTP/REST endpoint."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """``http://host:port/metrics`` (Prometheus text format)."""
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """PID of the tritonserver process while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """Where the server's stdout+stderr go."""
        return self._log_path

    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    # --- lifecycle ----------------------------------------------------------------------

    def command(self, backend_dir: Path) -> list[str]:
        """The tritonserver command line."""
        pkg, _ = _pytriton_dir(self.server_venv)
        cmd = [
            str(pkg / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--disable-auto-complete-config",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--model-control-mode={self.model_control_mode}",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--log-verbose={self.log_verbose}",
            f"--backend-config=python,shm-default-byte-size={self.shm_default_byte_size}",
            f"--backend-config=python,shm-growth-byte-size={self.shm_growth_byte_size}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        if self.model_config_name:
            cmd.append(f"--model-config-name={self.model_config_name}")
        cmd += [f"--load-model={name}" for name in self.load_models]
        cmd += list(self.extra_args)
        return cmd

    def _environment(self, pkg: Path) -> dict[str, str]:
        env = dict(os.environ)
        libs = pkg.parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p
        )
        # The python backend stub embeds Python and finds its packages via the first
        # `python3` on PATH: the server venv's.
        env["PATH"] = os.pathsep.join(
            p for p in (str(self.server_venv / "bin"), env.get("PATH", "")) if p
        )
        env["VIRTUAL_ENV"] = str(self.server_venv)
        if self._workdir is not None:  # the server's own temp files die with the workdir
            tmp = self._workdir / "tmp"
            tmp.mkdir(exist_ok=True)
            env["TMPDIR"] = str(tmp)
        for var in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP"):
            env.pop(var, None)
        return env

    def _make_backend_dir(self, workdir: Path) -> Path:
        pkg, py_version = _pytriton_dir(self.server_venv)
        server = pkg / "tritonserver"
        sources = {
            "libtriton_python.so": server / "backends" / "python" / "libtriton_python.so",
            "triton_python_backend_utils.py": server
            / "backends"
            / "python"
            / "triton_python_backend_utils.py",
            "triton_python_backend_stub": server
            / "python_backend_stubs"
            / py_version
            / "triton_python_backend_stub",
        }
        missing = [str(p) for p in sources.values() if not p.is_file()]
        if missing:
            raise LocalServerError(
                f"the pytriton package in {self.server_venv} lacks {', '.join(missing)} "
                f"(no python backend stub for Python {py_version}?)"
            )
        backend_dir = workdir / "backends"
        (backend_dir / "python").mkdir(parents=True)
        for name, src in sources.items():
            (backend_dir / "python" / name).symlink_to(src)
        return backend_dir

    def start(self, port_attempts: int = 3) -> LocalTriton:
        """Spawn the server and wait until ``/v2/health/ready``; LocalServerError on failure.

        Ports chosen automatically are chosen again when one was taken in the meantime.
        """
        if self.is_running():
            return self
        if not self.repository.is_dir():
            raise LocalServerError(f"model repository {self.repository} does not exist")
        for attempt in range(1, port_attempts + 1):
            try:
                return self._start_once()
            except LocalServerError as exc:
                if not (self._auto_ports and attempt < port_attempts and _port_clash(str(exc))):
                    raise
                self._pick_ports()
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self) -> LocalTriton:
        pkg, _ = _pytriton_dir(self.server_venv)
        self._workdir = Path(tempfile.mkdtemp(prefix="aspects-triton-"))
        try:
            backend_dir = self._make_backend_dir(self._workdir)
            self._log_path = self._explicit_log or self._workdir / "tritonserver.log"
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            cmd = self.command(backend_dir)
            began = time.monotonic()
            with self._log_path.open("wb") as log:
                self._process = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._environment(pkg),
                    cwd=self._workdir,
                    start_new_session=True,  # own process group: stubs die with it
                )
            _LIVE.add(self)
            self._wait_ready(began)
            self.startup_seconds = time.monotonic() - began
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, began: float) -> None:
        url = f"{self.http_url}/v2/health/ready"
        deadline = began + self.ready_timeout
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise self._failure(f"tritonserver exited with code {code} before becoming ready")
            try:
                with urllib.request.urlopen(url, timeout=2.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise self._failure(f"tritonserver not ready after {self.ready_timeout:.0f} s")
            time.sleep(0.2)

    def _failure(self, what: str) -> LocalServerError:
        errors = _log_errors(self._log_path) if self._log_path else ""
        where = f"repository {self.repository}"
        if self._explicit_log is not None:
            where += f", log {self._explicit_log}"
        parts = [f"{what} ({where})"]
        if errors:
            parts.append(f"errors in the server log:\n{errors}")
        parts.append(f"last {LOG_TAIL_LINES} log lines:\n{self.log_tail()}")
        return LocalServerError("\n".join(parts))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server log (kept after stop() removed a temporary log)."""
        if self._log_path is not None:
            return tail_lines(self._log_path, lines)
        return self._last_log_tail or "(no server log)"

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the server's process group, wait, then SIGKILL; idempotent.

        Returns the exit code (None if it was never started).
        """
        process, self._process = self._process, None
        code = None
        if process is not None:
            code = process.poll()
            if code is None:
                self._signal_group(process.pid, signal.SIGTERM)
                try:
                    code = process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(process.pid, signal.SIGKILL)
                    code = process.wait(timeout=10)
            # leftover stubs of a crashed server share its process group
            self._signal_group(process.pid, signal.SIGKILL)
            self._remove_shm_regions()
        _LIVE.discard(self)
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            if self._log_path is not None and self._log_path.parent == workdir:
                self._keep_log_tail()
            shutil.rmtree(workdir, ignore_errors=True)
        return code

    def _remove_shm_regions(self) -> None:
        """Unlink this server's python-backend regions, which a killed server leaves in
        /dev/shm (256 MiB each by default)."""
        for region in Path(SHM_DIR).glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                region.unlink()

    def _keep_log_tail(self) -> None:
        self._last_log_tail = self.log_tail()
        self._log_path = None

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        # The server was started with start_new_session=True: its pgid is its own pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- `aspects serve-local` --------------------------------------------------------------


def _port(text: str) -> int:
    """A TCP port 0..65535 (0 = any free port), validated when the options are parsed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {value}")
    return value


def add_serve_local_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``aspects serve-local``."""
    parser.add_argument(
        "repository", type=Path, help="a CPU model repository (aspects-export --layout cpu)"
    )
    parser.add_argument("--http-port", type=_port, default=8000, help="0 = any free port")
    parser.add_argument("--grpc-port", type=_port, default=8001, help="0 = any free port")
    parser.add_argument("--metrics-port", type=_port, default=8002, help="0 = any free port")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--model-control-mode", choices=("none", "explicit", "poll"), default="none"
    )
    parser.add_argument(
        "--load-model", action="append", default=[], help="with explicit mode; repeatable"
    )
    parser.add_argument("--model-config-name", default=None, help="custom config (configs/X)")
    parser.add_argument(
        "--server-venv", type=Path, default=None, help=f"default: ${ENV_SERVER_VENV} or repo's"
    )
    parser.add_argument("--log-file", type=Path, default=None, help="server log (default: temp)")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds")
    return parser


def run_serve_local(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM (or until the server dies); print the URLs once ready.

    A signal while the server is still starting abandons the start; in every case the
    tritonserver process is stopped (SIGTERM, then SIGKILL) before returning."""
    server = LocalTriton(
        args.repository,
        http_port=args.http_port or None,
        grpc_port=args.grpc_port or None,
        metrics_port=args.metrics_port or None,
        host=args.host,
        model_control_mode=args.model_control_mode,
        load_models=args.load_model,
        model_config_name=args.model_config_name,
        server_venv=args.server_venv,
        log_path=args.log_file,
        ready_timeout=args.ready_timeout,
    )
    stop_requested = False
    serving = False

    def _on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        if not serving:  # still starting: abandon the start at once, then stop the server
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        serving = True
        print(f"tritonserver ready in {server.startup_seconds:.1f} s (pid {server.pid})")
        print(f"  gRPC:    {server.grpc_url}")
        print(f"  HTTP:    {server.http_url}")
        print(f"  metrics: {server.metrics_url}")
        print(f"  log:     {server.log_path}")
        print("Ctrl-C to stop.", flush=True)
        while not stop_requested and server.is_running():
            time.sleep(0.5)
        if not server.is_running() and not stop_requested:
            print(f"tritonserver exited; last log lines:\n{server.log_tail()}", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


SERVE_LOCAL = Command(
    "serve-local",
    "run the local CPU Triton until Ctrl-C or SIGTERM",
    add_serve_local_arguments,
    run_serve_local,
)


def serve_local_main(argv: Sequence[str] | None = None) -> int:
    """``python -m aspects_devkit.local_triton REPOSITORY`` = ``aspects-dev serve-local``."""
    argv = argv if argv is not None else sys.argv[1:]
    return run_commands([SERVE_LOCAL], ["serve-local", *argv])


if __name__ == "__main__":
    sys.exit(serve_local_main())
