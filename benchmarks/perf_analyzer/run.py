"""perf_analyzer sweeps of the ``aspects`` ensemble and of each step (issue 6).

Runs the ``perf_analyzer`` binary bundled in the ``tritonclient==2.51.0`` wheel, installed in
the server environment ``.venv-server`` (DESIGN §6).  The binary needs ``libb64.so.0d`` and
``libcudart.so.12``; this script links them from the server venv's ``nvidia_pytriton.libs/``
(or Debian's ``libb64-0d``) into a private directory and puts that on ``LD_LIBRARY_PATH`` of
the perf_analyzer process only.

Two ways to point it at a server:

* ``--url HOST:PORT``: the gRPC endpoint of ANY Triton serving the ``aspects`` repository
  (e.g. the GPU deployment of docker-compose / Kubernetes).  Nothing else changes.
* ``--local``: exports the `untrained` effb3 Unet (**seeded, UNTRAINED weights: the timing is real,
  the labels mean nothing**) with ``aspects-export all --layout cpu`` into a temporary
  directory, serves that CPU repository with ``LocalTriton`` (the tritonserver 2.51 of
  nvidia-pytriton 0.7.0), measures, and stops it.  ``--oracle`` uses the tiny oracle unet
  instead (for smoke tests; results go under the label ``oracle``).

Workload, per model and batch size (``-b``):

* ``aspects`` and ``preprocess``: SLICES UINT8 [3, 512, 512] per batch element: the 2.5D
  stacks (``context_stacks``: slice below, slice, slice above) of the 20 real slices of
  ``make_phantom(seed=3)`` windowed and oriented by the client (``load_volume`` +
  ``prepare``), given to perf_analyzer as an ``--input-data`` JSON file; a batch of b takes b
  consecutive stacks (perf_analyzer's step + i rule).
* ``unet``: IMAGE FP32 [3, 256, 256]; ``postprocess``: LOGITS FP32 [11, 256, 256] + SLICES
  (the network size is ``contract.NETWORK_SIZE``).
  By default (``--step-data server``) they are produced by the server's own ``preprocess``
  and ``unet`` from the first phantom slices, so they are the tensors the ensemble really
  passes between its steps (with the untrained unet the logits are realistic in shape and
  dtype only).  ``--step-data random`` uses perf_analyzer's random data instead.

Each concurrency level is one perf_analyzer invocation (``--concurrency-range c``,
``--measurement-mode time_windows``, ``--collect-metrics`` when ``/metrics`` answers,
``--verbose-csv -f``); the rows are concatenated under perf_analyzer's own header into
``results/perf_[LABEL_]<model>_b<batch>.csv``, its console output into the matching
``.log``, and settings, versions and the parsed per-step server statistics into
``results/perf_[LABEL_]runs.json`` (read by ``summarize.py``).  The measurement window is
chosen per model and batch from a probe of the request latency (about ``--requests-per-
window`` requests per window, clamped to ``--min-interval-ms``..``--max-interval-ms``).
A level that does not stabilise is retried once with a doubled stability threshold; if it
still fails it is recorded as unstable (no row) and the sweep goes on.

Measurements are serialised with the other benchmarks on this machine: after exporting, the
script takes ``flock`` on ``--lock`` (default /tmp/aspects-bench.lock; the same lock the
``flock(1)`` command uses) and waits until no process matches ``--wait-for`` (default
``benchmarks/triton_cpu.py``).  Do not also wrap it in ``flock`` on the same file.

    .venv/bin/python benchmarks/perf_analyzer/run.py --local            # this machine, CPU
    .venv/bin/python benchmarks/perf_analyzer/run.py --url gpu-host:8001 \\
        --metrics-url gpu-host:8002/metrics --label gpu --concurrency 1,2,4,8,16,32
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import datetime as dt
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DEFAULT_RESULTS = HERE.parent / "results"
DEFAULT_SERVER_VENV = REPO_ROOT / ".venv-server"
MODELS = ("aspects", "preprocess", "unet", "postprocess")
PHANTOM_SEED = 3
SLICE_HW = (512, 512)  # native in-plane size of the phantom slices
CHANNELS = 3  # contract.NETWORK_CHANNELS (2.5D stacks); checked against the contract below
NETWORK_HW = (256, 256)  # contract.NETWORK_SIZE; checked against the contract below
STEP_DATA_SLICES = 8  # entries in the unet / postprocess input files (23 MB of logits)
DEFAULT_LOCK = "/tmp/aspects-bench.lock"
# the other measurement scripts of benchmarks/ (they take the same lock once running)
DEFAULT_WAIT_FOR = (
    "benchmarks/triton_cpu.py",
    "benchmarks/end_to_end.py",
    "benchmarks/client_prep.py",
)
UNSTABLE_MARK = "Failed to obtain stable measurement"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


# --------------------------------------------------------------------------- perf_analyzer
def site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3.*/site-packages"))
    if not found:
        raise SystemExit(f"error: no site-packages under {venv}/lib (not a virtual environment?)")
    return found[-1]


def _first(patterns: Sequence[tuple[Path, str]]) -> Path | None:
    for directory, pattern in patterns:
        hits = sorted(directory.glob(pattern)) if directory.is_dir() else []
        if hits:
            return hits[0]
    return None


def prepare_perf_analyzer(venv: Path, libdir: Path) -> tuple[Path, dict[str, str]]:
    """(binary, environment) for perf_analyzer: the two missing libraries linked into
    ``libdir`` and only that directory (plus the caller's) on LD_LIBRARY_PATH."""
    binary = venv / "bin" / "perf_analyzer"
    if not binary.is_file():
        raise SystemExit(
            f"error: {binary} not found; install tritonclient==2.51.0 into {venv} "
            "(requirements/server.txt: its wheel bundles bin/perf_analyzer)"
        )
    wheel_libs = site_packages(venv) / "nvidia_pytriton.libs"
    debian = Path("/usr/lib/x86_64-linux-gnu")
    wanted = {
        "libb64.so.0d": [(wheel_libs, "libb64*.so.0d"), (debian, "libb64.so.0d")],
        "libcudart.so.12": [(wheel_libs, "libcudart*.so.12*"), (debian, "libcudart.so.12*")],
    }
    libdir.mkdir(parents=True, exist_ok=True)
    for soname, patterns in wanted.items():
        source = _first(patterns)
        if source is None:
            raise SystemExit(
                f"error: no {soname} for perf_analyzer: looked for {patterns}; install "
                "nvidia-pytriton==0.7.0 into the server venv (or apt-get install libb64-0d)"
            )
        link = libdir / soname
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source.resolve())
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(libdir), env.get("LD_LIBRARY_PATH", "")) if p
    )
    probe = subprocess.run(
        [str(binary), "--version"], env=env, capture_output=True, text=True, timeout=60
    )
    text = (probe.stdout + probe.stderr).strip()
    if probe.returncode != 0 or "Perf Analyzer Version" not in text:
        raise SystemExit(f"error: perf_analyzer does not start: {text}")
    return binary, env


def perf_analyzer_version(binary: Path, env: dict[str, str]) -> str:
    out = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True)
    match = re.search(r"Perf Analyzer Version (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


# --------------------------------------------------------------------------- data
def phantom_slices() -> np.ndarray:
    """The 2.5D stacks UINT8 [20, 3, 512, 512] of the phantom's slices, as the client sends."""
    from aspects_client import contract
    from aspects_client.preprocessing import context_stacks
    from aspects_client.slicing import prepare
    from aspects_client.volume_io import load_volume
    from aspects_synth import make_phantom

    if (contract.NETWORK_CHANNELS, contract.NETWORK_SIZE) != (CHANNELS, NETWORK_HW):
        raise SystemExit("error: CHANNELS / NETWORK_HW here disagree with contract.py")
    ph = make_phantom(seed=PHANTOM_SEED)
    slices = prepare(load_volume(ph.image, name=f"phantom seed {PHANTOM_SEED}")).slices
    if slices.dtype != np.uint8 or slices.shape[1:] != SLICE_HW:
        raise SystemExit(f"error: unexpected phantom slices {slices.dtype} {slices.shape}")
    return context_stacks(slices)


def _entry(name: str, array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    return {
        name: {"b64": base64.b64encode(array.tobytes()).decode("ascii"), "shape": list(array.shape)}
    }


def write_input_data(path: Path, entries: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="ascii") as handle:
        json.dump({"data": entries}, handle)
    return path


def grpc_client(url: str) -> Any:
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url)


def infer(client: Any, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str]):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    req = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(np.ascontiguousarray(array))
        req.append(tensor)
    outs = [grpcclient.InferRequestedOutput(o) for o in outputs]
    result = client.infer(model, req, outputs=outs, client_timeout=600)
    return {o: result.as_numpy(o) for o in outputs}


def build_inputs(
    client: Any, slices: np.ndarray, workdir: Path, models: Sequence[str], step_data: str
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Per model: perf_analyzer options for its input data, and a one-element sample batch
    source (arrays [N, ...]) for the latency probe."""
    plan: dict[str, dict[str, Any]] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    shape_opt = [f"--shape=SLICES:{CHANNELS},{SLICE_HW[0]},{SLICE_HW[1]}"]
    slices_json = None
    if {"aspects", "preprocess"} & set(models) or step_data == "server":
        slices_json = write_input_data(
            workdir / "slices.json", [_entry("SLICES", s) for s in slices]
        )
    phantom_note = (
        f"{len(slices)} real phantom slices (make_phantom(seed={PHANTOM_SEED}) -> "
        f"load_volume + prepare) as 2.5D stacks, UINT8 {CHANNELS}x{SLICE_HW[0]}x{SLICE_HW[1]}"
    )
    for model in ("aspects", "preprocess"):
        plan[model] = {"args": [f"--input-data={slices_json}", *shape_opt], "data": phantom_note}
        arrays[model] = {"SLICES": slices}
    need_steps = {"unet", "postprocess"} & set(models)
    if need_steps and step_data == "server":
        n = min(STEP_DATA_SLICES, len(slices))
        sub = slices[:n]
        log(f"step data: running the server's preprocess and unet on {n} phantom slices")
        image = infer(client, "preprocess", {"SLICES": sub}, ["IMAGE"])["IMAGE"]
        logits = infer(client, "unet", {"IMAGE": image}, ["LOGITS"])["LOGITS"]
        unet_json = write_input_data(workdir / "unet.json", [_entry("IMAGE", x) for x in image])
        post_json = write_input_data(
            workdir / "postprocess.json",
            [
                {**_entry("LOGITS", lg), **_entry("SLICES", s)}
                for lg, s in zip(logits, sub, strict=True)
            ],
        )
        src = f"{n} phantom slices through the server's own preprocess"
        plan["unet"] = {
            "args": [f"--input-data={unet_json}"],
            "data": f"IMAGE FP32 {CHANNELS}x{NETWORK_HW[0]}x{NETWORK_HW[1]} from {src}",
        }
        plan["postprocess"] = {
            "args": [f"--input-data={post_json}"],
            "data": f"LOGITS FP32 11x{NETWORK_HW[0]}x{NETWORK_HW[1]} from {src} and unet "
            "(untrained unet: realistic in shape and dtype only) "
            "+ the matching SLICES",
        }
        arrays["unet"] = {"IMAGE": image}
        arrays["postprocess"] = {"LOGITS": logits, "SLICES": sub}
    else:
        rng = np.random.default_rng(0)
        plan["unet"] = {
            "args": ["--input-data=random"],
            "data": f"perf_analyzer random data, IMAGE FP32 {CHANNELS}x"
            f"{NETWORK_HW[0]}x{NETWORK_HW[1]}",
        }
        plan["postprocess"] = {
            "args": ["--input-data=random", *shape_opt],
            "data": f"perf_analyzer random data, LOGITS FP32 11x{NETWORK_HW[0]}x{NETWORK_HW[1]}"
            f" + SLICES UINT8 {CHANNELS}x{SLICE_HW[0]}x{SLICE_HW[1]}",
        }
        arrays["unet"] = {"IMAGE": rng.random((1, CHANNELS, *NETWORK_HW), dtype=np.float32)}
        arrays["postprocess"] = {
            "LOGITS": rng.standard_normal((1, 11, *NETWORK_HW), dtype=np.float32),
            "SLICES": slices[:1],
        }
    return plan, arrays


def probe_latency(
    client: Any, model: str, arrays: dict[str, np.ndarray], batch: int, repeats: int = 2
) -> float:
    """Seconds per request of ``batch`` elements, single stream, after one warm-up."""
    outputs = {
        "aspects": ["LABELS", "CONFIDENCE"],
        "preprocess": ["IMAGE"],
        "unet": ["LOGITS"],
        "postprocess": ["LABELS", "CONFIDENCE"],
    }[model]

    def batch_of(a: np.ndarray) -> np.ndarray:
        reps = -(-batch // len(a))
        return np.concatenate([a] * reps)[:batch]

    inputs = {k: batch_of(v) for k, v in arrays.items()}
    infer(client, model, inputs, outputs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        infer(client, model, inputs, outputs)
        times.append(time.perf_counter() - t0)
    return min(times)


# --------------------------------------------------------------------------- output parsing
_LATENCY_RE = re.compile(r"Avg request latency: (\d+) usec \((.*)\)")
_PART_RE = re.compile(r"([a-z ]+?) (\d+) usec")


def _server_block(lines: list[str]) -> dict[str, float]:
    stats: dict[str, float] = {}
    for line in lines:
        text = line.strip()
        for key, label in (
            ("inference_count", "Inference count:"),
            ("execution_count", "Execution count:"),
            ("request_count", "Successful request count:"),
        ):
            if text.startswith(label):
                stats[key] = float(text.split(":", 1)[1])
        match = _LATENCY_RE.search(text)
        if match:
            stats["request_latency_us"] = float(match.group(1))
            for part in match.group(2).split("+"):
                m = _PART_RE.search(part.strip())
                if m:
                    stats[m.group(1).strip().replace(" ", "_") + "_us"] = float(m.group(2))
    return stats


def parse_console(text: str) -> dict[str, Any]:
    """The last measurement's client figures, server figures and per-step (composing
    model) figures from perf_analyzer's console output."""
    start = text.rfind("Request concurrency:")
    block = text[start:] if start >= 0 else text
    lines = block.splitlines()
    parsed: dict[str, Any] = {"client": {}, "server": {}, "composing": {}}
    section = None
    current: list[str] = []
    composing_name = None

    def flush() -> None:
        if section == "server":
            parsed["server"] = _server_block(current)
        elif section == "composing" and composing_name:
            parsed["composing"][composing_name] = _server_block(current)

    for line in lines:
        stripped = line.strip()
        if stripped.startswith("Client:"):
            section = "client"
            continue
        if stripped.startswith("Server:") and section != "composing":
            flush()
            section, current = "server", []
            continue
        if stripped.startswith("Composing models:"):
            flush()
            section, current, composing_name = "composing", [], None
            continue
        if stripped.startswith("Server Prometheus Metrics") or stripped.startswith(
            "Inferences/Second vs."
        ):
            flush()
            section, current = None, []
            continue
        m = re.match(r"^(\w+), version: (\S+)", stripped)
        if section == "composing" and m:
            flush()
            composing_name, current = m.group(1), []
            continue
        if section == "client":
            if stripped.startswith("Request count:"):
                parsed["client"]["request_count"] = int(stripped.split(":")[1])
            elif stripped.startswith("Throughput:"):
                parsed["client"]["throughput_infer_per_s"] = float(stripped.split()[1])
        elif section in ("server", "composing"):
            current.append(stripped)
    flush()
    return parsed


# --------------------------------------------------------------------------- server
def wait_quiet(patterns: Sequence[str]) -> float:
    """Block while any process matches one of ``patterns`` (``pgrep -f``); seconds waited."""
    t0 = time.monotonic()
    for pattern in patterns:
        announced = False
        while subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0:
            if not announced:
                log(f"waiting until no process matches {pattern!r} ...")
                announced = True
            time.sleep(5)
    return time.monotonic() - t0


@contextlib.contextmanager
def bench_lock(path: str | None, wait_for: Sequence[str]) -> Iterator[None]:
    if not path:
        yield
        return
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole block
    try:
        t0 = time.monotonic()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for the benchmark lock {path} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        wait_quiet(wait_for)
        waited = time.monotonic() - t0
        if waited > 1:
            log(f"lock acquired after {waited:.0f} s")
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def export_repository(work: Path, oracle: bool) -> Path:
    exe = REPO_ROOT / ".venv" / "bin" / "aspects-export"
    cmd = [
        str(exe) if exe.exists() else "aspects-export",
        "all",
        "--check-slices",
        "0",
        "--layout",
        "cpu",
        "--out",
        str(work),
    ]
    cmd += ["--oracle"] if oracle else ["--checkpoint", "untrained"]
    log("exporting: " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    return work / "model_repository"


def metrics_reachable(url: str) -> bool:
    full = url if "://" in url else f"http://{url}"
    try:
        with urllib.request.urlopen(full, timeout=5) as response:
            return response.status == 200 and b"nv_" in response.read(65536)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def server_info(client: Any) -> dict[str, Any]:
    meta = client.get_server_metadata()
    info: dict[str, Any] = {"name": meta.name, "version": meta.version}
    models = {}
    for model in MODELS:
        try:
            models[model] = bool(client.is_model_ready(model))
        except Exception:  # reported, not fatal
            models[model] = False
    info["models_ready"] = models
    return info


def venv_versions(venv: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "for d in ('nvidia-pytriton', 'tritonclient', 'onnxruntime', 'numpy'):\n"
        "    try: out[d] = m.version(d)\n"
        "    except Exception: out[d] = None\n"
        "print(json.dumps(out))\n"
    )
    try:
        out = subprocess.run(
            [str(venv / "bin" / "python"), "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------- sweep
def run_level(
    binary: Path,
    env: dict[str, str],
    args: argparse.Namespace,
    model: str,
    batch: int,
    conc: int,
    interval_ms: int,
    data_args: list[str],
    metrics: str | None,
    workdir: Path,
) -> dict[str, Any]:
    """One perf_analyzer invocation at one concurrency level; retried once if unstable."""
    stability = args.stability
    attempts = []
    for attempt in (1, 2):
        csv_path = workdir / f"{model}_b{batch}_c{conc}_try{attempt}.csv"
        cmd = [
            str(binary),
            "-m",
            model,
            "-u",
            args.url,
            "-i",
            "grpc",
            "-b",
            str(batch),
            "--concurrency-range",
            str(conc),
            "--measurement-mode",
            "time_windows",
            "--measurement-interval",
            str(interval_ms),
            "--stability-percentage",
            str(stability),
            "--max-trials",
            str(args.max_trials),
            *data_args,
            "--verbose-csv",
            "-f",
            str(csv_path),
        ]
        if metrics:
            cmd += [
                "--collect-metrics",
                "--metrics-url",
                metrics,
                "--metrics-interval",
                str(min(1000, interval_ms // 4)),
            ]
        timeout = interval_ms / 1000 * (args.max_trials + 2) + 300
        if attempt > 1:
            wait_quiet(args.wait_patterns)
        log(
            f"{model} b{batch} c{conc}: window {interval_ms} ms, stability {stability} %"
            + (" (retry)" if attempt > 1 else "")
        )
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            output = (
                (exc.stdout or b"").decode(errors="replace")
                if isinstance(exc.stdout, bytes)
                else (exc.stdout or "")
            )
            output += f"\n[run.py] perf_analyzer killed after {timeout:.0f} s\n"
            code = -9
        elapsed = time.monotonic() - t0
        shown = [
            c
            if not c.startswith("--input-data=/")
            else "--input-data=" + Path(c.split("=", 1)[1]).name
            for c in cmd
        ]
        shown[0] = "perf_analyzer"
        shown = [s if s != str(csv_path) else f"{model}_b{batch}_c{conc}.csv" for s in shown]
        record: dict[str, Any] = {
            "concurrency": conc,
            "attempt": attempt,
            "command": " ".join(shown),
            "interval_ms": interval_ms,
            "stability_percentage": stability,
            "exit_code": code,
            "elapsed_s": round(elapsed, 1),
            "console": output,
        }
        rows: list[dict[str, str]] = []
        header: list[str] = []
        if code == 0 and csv_path.is_file():
            with csv_path.open(newline="") as handle:
                reader = csv.reader(handle)
                table = [r for r in reader if r]
            if table:
                header, body = table[0], table[1:]
                rows = [dict(zip(header, r, strict=False)) for r in body]
        record["header"], record["rows"] = header, rows
        attempts.append(record)
        if rows:
            record["status"] = "ok"
            record["parsed"] = parse_console(output)
            break
        record["status"] = "unstable" if UNSTABLE_MARK in output else "failed"
        last = "\n".join(output.strip().splitlines()[-3:])
        log(f"{model} b{batch} c{conc}: {record['status']} (exit {code}): {last}")
        if record["status"] != "unstable":
            break
        stability *= 2
    return {"attempts": attempts, "final": attempts[-1]}


def sweep(
    args: argparse.Namespace,
    binary: Path,
    env: dict[str, str],
    workdir: Path,
    results: Path,
    label: str,
) -> dict[str, Any]:
    client = grpc_client(args.url)
    deadline = time.monotonic() + 60
    while not client.is_server_ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"error: Triton at {args.url} is not ready")
        time.sleep(1)
    info = server_info(client)
    missing = [m for m in args.models if not info["models_ready"].get(m)]
    if missing:
        raise SystemExit(f"error: models not ready on {args.url}: {missing}")
    metrics = args.metrics_url
    if metrics is None:
        metrics = args.url.rsplit(":", 1)[0] + ":8002/metrics"
    metrics_ok = metrics_reachable(metrics) and not args.no_metrics
    log(f"metrics {metrics}: {'collected' if metrics_ok else 'not reachable, not collected'}")
    slices = phantom_slices()
    plan, arrays = build_inputs(client, slices, workdir, args.models, args.step_data)

    runs: list[dict[str, Any]] = []
    prefix = f"perf_{label}_" if label else "perf_"
    for model in args.models:
        for batch in args.batch_sizes:
            levels = args.concurrency if batch == 1 else args.concurrency_batched
            wait_quiet(args.wait_patterns)
            latency = probe_latency(client, model, arrays[model], batch)
            interval = int(
                min(
                    args.max_interval_ms,
                    max(args.min_interval_ms, 1000 * latency * args.requests_per_window),
                )
            )
            interval = -(-interval // 500) * 500
            log(
                f"{model} b{batch}: probe {latency * 1000:.0f} ms/request -> window "
                f"{interval} ms, concurrency {levels}"
            )
            levels_out = []
            header: list[str] = []
            rows: list[list[str]] = []
            console = []
            for conc in levels:
                waited = wait_quiet(args.wait_patterns)
                loadavg = [round(x, 2) for x in os.getloadavg()]
                level = run_level(
                    binary,
                    env,
                    args,
                    model,
                    batch,
                    conc,
                    interval,
                    plan[model]["args"],
                    metrics if metrics_ok else None,
                    workdir,
                )
                for att in level["attempts"]:
                    console.append(f"===== {att['command']}\n{att['console']}")
                final = level["final"]
                if final["rows"]:
                    if not header:
                        header = final["header"]
                    rows += [[r.get(h, "") for h in header] for r in final["rows"]]
                levels_out.append(
                    {
                        "concurrency": conc,
                        "status": final["status"],
                        "loadavg_at_start": loadavg,
                        "waited_for_others_s": round(waited, 1),
                        "interval_ms": final["interval_ms"],
                        "stability_percentage": final["stability_percentage"],
                        "attempts": len(level["attempts"]),
                        "elapsed_s": sum(a["elapsed_s"] for a in level["attempts"]),
                        "command": final["command"],
                        "parsed": final.get("parsed"),
                        "csv_row": final["rows"][0] if final["rows"] else None,
                        "error_tail": None
                        if final["rows"]
                        else "\n".join(final["console"].strip().splitlines()[-5:]),
                    }
                )
            stem = f"{prefix}{model}_b{batch}"
            (results / f"{stem}.csv").unlink(missing_ok=True)  # never leave a stale CSV
            if header:
                with (results / f"{stem}.csv").open("w", newline="") as handle:
                    writer = csv.writer(handle, lineterminator="\n")
                    writer.writerow(header)
                    writer.writerows(rows)
            (results / f"{stem}.log").write_text("\n".join(console))
            runs.append(
                {
                    "model": model,
                    "batch": batch,
                    "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "probe_latency_s": round(latency, 4),
                    "interval_ms": interval,
                    "data": plan[model]["data"],
                    "csv": f"{stem}.csv" if header else None,
                    "log": f"{stem}.log",
                    "levels": levels_out,
                }
            )
    return {
        "server": info,
        "metrics_url": metrics if metrics_ok else None,
        "metrics_note": None if metrics_ok else f"{metrics} not reachable",
        "runs": runs,
    }


def merge_manifests(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the runs of ``old`` that it did not re-measure (same model and batch)."""
    redone = {(r["model"], r["batch"]) for r in new["runs"]}
    kept = [r for r in old.get("runs", []) if (r["model"], r["batch"]) not in redone]
    order = {m: i for i, m in enumerate(MODELS)}
    new["runs"] = sorted(kept + new["runs"], key=lambda r: (order.get(r["model"], 9), r["batch"]))
    new["started"] = min(old.get("started", new["started"]), new["started"])
    new["merged_from"] = [*old.get("merged_from", []), old.get("argv")]
    return new


def _stop(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    # Stop cleanly (server, perf_analyzer, temp dir) on SIGTERM and on SIGINT, even when
    # started in the background, where SIGINT is ignored by default.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="gRPC host:port of a running Triton serving `aspects`")
    where.add_argument(
        "--local",
        action="store_true",
        help="export the untrained (seeded) effb3 CPU repository and serve it",
    )
    p.add_argument("--oracle", action="store_true", help="--local with the tiny oracle unet")
    p.add_argument(
        "--metrics-url", default=None, help="host:port/metrics (default: the URL's host, port 8002)"
    )
    p.add_argument("--no-metrics", action="store_true", help="do not pass --collect-metrics")
    p.add_argument(
        "--label",
        default=None,
        help="file label: results/perf_<label>_<model>_b<batch>.csv "
        "(default: none for --local, 'oracle' with --oracle, 'gpu' for --url)",
    )
    p.add_argument(
        "--models",
        type=lambda s: [m for m in s.split(",") if m],
        default=list(MODELS),
        help="comma-separated, default all four",
    )
    p.add_argument("--batch-sizes", type=int_list, default=[1, 8])
    p.add_argument(
        "--concurrency",
        type=int_list,
        default=None,
        help="levels for batch 1 (default 1,2,4 with --local, else 1,2,4,8,16,32)",
    )
    p.add_argument(
        "--concurrency-batched",
        type=int_list,
        default=None,
        help="levels for batch > 1 (default 1,2 with --local, else = --concurrency)",
    )
    p.add_argument("--min-interval-ms", type=int, default=5000)
    p.add_argument("--max-interval-ms", type=int, default=20000)
    p.add_argument(
        "--requests-per-window",
        type=float,
        default=8.0,
        help="window length = this many single-stream request latencies (clamped)",
    )
    p.add_argument(
        "--stability",
        type=float,
        default=30.0,
        help="perf_analyzer --stability-percentage (doubled on the one retry)",
    )
    p.add_argument("--max-trials", type=int, default=5)
    p.add_argument("--step-data", choices=("server", "random"), default="server")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the other models/batches of an existing perf_[LABEL_]runs.json "
        "(re-measure a subset, e.g. --models unet --merge)",
    )
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--server-venv", type=Path, default=DEFAULT_SERVER_VENV)
    p.add_argument("--lock", default=DEFAULT_LOCK, help="flock file; '' disables")
    p.add_argument(
        "--wait-for",
        action="append",
        default=None,
        help="wait until `pgrep -f PATTERN` finds nothing (repeatable)",
    )
    args = p.parse_args(argv)
    if args.oracle and not args.local:
        p.error("--oracle needs --local")
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"unknown models {bad}; choose from {MODELS}")
    if args.concurrency is None:
        args.concurrency = [1, 2, 4] if args.local else [1, 2, 4, 8, 16, 32]
    if args.concurrency_batched is None:
        args.concurrency_batched = [1, 2] if args.local else list(args.concurrency)
    label = (
        args.label
        if args.label is not None
        else (("oracle" if args.oracle else "") if args.local else "gpu")
    )
    wait_for = DEFAULT_WAIT_FOR if args.wait_for is None else tuple(args.wait_for)
    args.wait_patterns = wait_for  # also checked before every measurement
    args.results.mkdir(parents=True, exist_ok=True)
    server_venv = args.server_venv.absolute()

    started = dt.datetime.now(dt.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="aspects-perf-"))
    try:
        binary, env = prepare_perf_analyzer(server_venv, work / "lib")
        pa_version = perf_analyzer_version(binary, env)
        log(f"perf_analyzer {pa_version} ({binary}); libraries linked in {work / 'lib'}")
        local: dict[str, Any] | None = None
        if args.local:
            repo = export_repository(work / "export", args.oracle)
            from aspects_client.local_triton import LocalTriton

            with bench_lock(args.lock, wait_for):
                log("starting LocalTriton")
                with LocalTriton(repo, server_venv=server_venv) as server:
                    args.url = server.grpc_url
                    if args.metrics_url is None:
                        args.metrics_url = server.metrics_url.removeprefix("http://")
                    local = {
                        "startup_s": round(server.startup_seconds or 0, 2),
                        "repository": "aspects-export all --layout cpu "
                        + ("--oracle" if args.oracle else "--checkpoint demo"),
                    }
                    measured = sweep(args, binary, env, work, args.results, label)
        else:
            with bench_lock(args.lock if args.lock and _is_local(args.url) else "", wait_for):
                measured = sweep(args, binary, env, work, args.results, label)
        finished = dt.datetime.now(dt.timezone.utc)
        manifest = {
            "generated_by": "benchmarks/perf_analyzer/run.py",
            "argv": sys.argv[1:] if argv is None else list(argv),
            "label": label,
            "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "target": "local" if args.local else "url",
            "checkpoint": (
                None
                if not args.local
                else "ORACLE unet (not a network)"
                if args.oracle
                else "untrained: seeded, UNTRAINED effb3 weights"
            ),
            "local_server": local,
            "machine_client": machine_info(),
            "perf_analyzer_version": pa_version,
            "server_venv_versions": venv_versions(server_venv),
            "python": platform.python_version(),
            "settings": {
                k: getattr(args, k)
                for k in (
                    "batch_sizes",
                    "concurrency",
                    "concurrency_batched",
                    "min_interval_ms",
                    "max_interval_ms",
                    "requests_per_window",
                    "stability",
                    "max_trials",
                    "step_data",
                    "models",
                )
            },
            **measured,
        }
        out = args.results / (f"perf_{label}_runs.json" if label else "perf_runs.json")
        if args.merge and out.is_file():
            manifest = merge_manifests(json.loads(out.read_text()), manifest)
        out.write_text(json.dumps(manifest, indent=1) + "\n")
        n_ok = sum(lv["status"] == "ok" for r in measured["runs"] for lv in r["levels"])
        n_all = sum(len(r["levels"]) for r in measured["runs"])
        log(
            f"done in {(finished - started).total_seconds():.0f} s: {n_ok}/{n_all} levels "
            f"measured; manifest {out}"
        )
        return 0 if n_ok == n_all else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _is_local(url: str) -> bool:
    host = url.rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "::1", "[::1]")


if __name__ == "__main__":
    sys.exit(main())
