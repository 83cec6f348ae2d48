"""perf_analyzer sweeps of the ``aspects`` ensemble and of each step (issue 6; method and
workload in benchmarks/README.md).  Runs the ``perf_analyzer`` of the server environment's
``tritonclient`` wheel (its missing libraries linked into a private ``LD_LIBRARY_PATH``)
against ``--url`` (any Triton serving the repository, e.g. a GPU host) or, with ``--local``,
a CPU repository of the demo weights, ``--cpu-runtime auto``, served by ``LocalStack``
(``--oracle``: the tiny oracle unet).  One invocation per model, batch and level; rows go to
``results/perf_[LABEL_]<model>_b<batch>.{csv,log}`` and settings, versions, provenance and the
parsed per-step statistics to ``results/perf_[LABEL_]runs.json`` (read by ``summarize.py``).
Measurements take ``flock`` on ``--lock`` and wait for the other benchmark scripts.

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness
from harness import log

MODELS = ("aspects", "preprocess", "unet", "postprocess")
OUTPUTS = {"aspects": ["LABELS", "CONFIDENCE"], "preprocess": ["IMAGE"], "unet": ["LOGITS"],
           "postprocess": ["LABELS", "CONFIDENCE"]}
SLICE = "3x512x512"  # one 2.5D stack; the network size is contract.NETWORK_SIZE (256)
NETWORK = "256x256"
STEP_DATA_SLICES = 8  # entries in the unet / postprocess input files
DEFAULT_LOCK = "/tmp/aspects-bench.lock"
DEFAULT_WAIT_FOR = ("benchmarks/triton_cpu.py", "benchmarks/end_to_end.py",
                    "benchmarks/client_prep.py")
UNSTABLE_MARK = "Failed to obtain stable measurement"


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


# --------------------------------------------------------------------------- perf_analyzer
def prepare_perf_analyzer(venv: Path, libdir: Path) -> tuple[Path, dict[str, str], str]:
    """(binary, environment, version) for perf_analyzer: the two missing libraries linked
    into ``libdir`` and only that directory (plus the caller's) on LD_LIBRARY_PATH."""
    binary = venv / "bin" / "perf_analyzer"
    if not binary.is_file():
        raise SystemExit(f"error: {binary} not found; install tritonclient==2.51.0 into {venv} "
                         "(requirements/server.txt: its wheel bundles bin/perf_analyzer)")
    sites = sorted((venv / "lib").glob("python3.*/site-packages"))
    wheel_libs = (sites[-1] if sites else venv) / "nvidia_pytriton.libs"
    debian = Path("/usr/lib/x86_64-linux-gnu")
    libdir.mkdir(parents=True, exist_ok=True)
    for soname, patterns in {
        "libb64.so.0d": [(wheel_libs, "libb64*.so.0d"), (debian, "libb64.so.0d")],
        "libcudart.so.12": [(wheel_libs, "libcudart*.so.12*"), (debian, "libcudart.so.12*")],
    }.items():
        hits = [h for d, pat in patterns if d.is_dir() for h in sorted(d.glob(pat))]
        if not hits:
            raise SystemExit(f"error: no {soname} for perf_analyzer: looked for {patterns}; "
                             "install nvidia-pytriton==0.7.0 into the server venv "
                             "(or apt-get install libb64-0d)")
        (libdir / soname).unlink(missing_ok=True)
        (libdir / soname).symlink_to(hits[0].resolve())
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(libdir), env.get("LD_LIBRARY_PATH", "")) if p)
    probe = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True,
                           timeout=60)
    text = (probe.stdout + probe.stderr).strip()
    match = re.search(r"Perf Analyzer Version (\S+)", text)
    if probe.returncode != 0 or not match:
        raise SystemExit(f"error: perf_analyzer does not start: {text}")
    return binary, env, match.group(1)


# --------------------------------------------------------------------------- data
def _entry(name: str, array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    return {name: {"b64": base64.b64encode(array.tobytes()).decode("ascii"),
                   "shape": list(array.shape)}}


def write_input_data(path: Path, entries: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="ascii") as handle:
        json.dump({"data": entries}, handle)
    return path


def build_inputs(client: Any, slices: np.ndarray, workdir: Path, models: Sequence[str],
                 step_data: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict]]:
    """Per model: perf_analyzer options for its input data, and sample arrays [N, ...] for
    the latency probe."""
    shape_opt = [f"--shape=SLICES:{SLICE.replace('x', ',')}"]
    slices_json = write_input_data(workdir / "slices.json", [_entry("SLICES", s) for s in slices])
    note = (f"the client's {len(slices)} 2.5D stacks of make_phantom(seed={harness.PHANTOM_SEED})"
            f" (load_volume + prepare + context_stacks), UINT8 {SLICE}")
    plan = {m: {"args": [f"--input-data={slices_json}", *shape_opt], "data": note}
            for m in ("aspects", "preprocess")}
    arrays: dict[str, dict] = {m: {"SLICES": slices} for m in ("aspects", "preprocess")}
    if {"unet", "postprocess"} & set(models) and step_data == "server":
        sub = slices[: min(STEP_DATA_SLICES, len(slices))]
        log(f"step data: running the server's preprocess and unet on {len(sub)} phantom slices")
        image = harness.infer(client, "preprocess", {"SLICES": sub}, ["IMAGE"])["IMAGE"]
        logits = harness.infer(client, "unet", {"IMAGE": image}, ["LOGITS"])["LOGITS"]
        unet_json = write_input_data(workdir / "unet.json", [_entry("IMAGE", x) for x in image])
        post_json = write_input_data(workdir / "postprocess.json", [
            {**_entry("LOGITS", lg), **_entry("SLICES", s)}
            for lg, s in zip(logits, sub, strict=True)])
        src = f"{len(sub)} phantom stacks through the server's own preprocess"
        plan["unet"] = {"args": [f"--input-data={unet_json}"],
                        "data": f"IMAGE FP32 3x{NETWORK} from {src}"}
        plan["postprocess"] = {"args": [f"--input-data={post_json}"],
                               "data": f"LOGITS FP32 11x{NETWORK} from {src} and the "
                               f"served unet + the matching SLICES UINT8 {SLICE}"}
        arrays |= {"unet": {"IMAGE": image}, "postprocess": {"LOGITS": logits, "SLICES": sub}}
    else:
        rng, hw = np.random.default_rng(0), tuple(int(v) for v in NETWORK.split("x"))
        plan["unet"] = {"args": ["--input-data=random"],
                        "data": f"perf_analyzer random data, IMAGE FP32 3x{NETWORK}"}
        plan["postprocess"] = {"args": ["--input-data=random", *shape_opt],
                               "data": f"perf_analyzer random data, LOGITS FP32 11x{NETWORK}"
                               f" + SLICES UINT8 {SLICE}"}
        arrays["unet"] = {"IMAGE": rng.random((1, 3, *hw), dtype=np.float32)}
        arrays["postprocess"] = {"LOGITS": rng.standard_normal((1, 11, *hw), dtype=np.float32),
                                 "SLICES": slices[:1]}
    return plan, arrays


def probe_latency(client: Any, model: str, arrays: dict[str, np.ndarray], batch: int) -> float:
    """Seconds per request of ``batch`` elements, single stream, after one warm-up."""
    inputs = {k: np.concatenate([a] * -(-batch // len(a)))[:batch] for k, a in arrays.items()}
    harness.infer(client, model, inputs, OUTPUTS[model])
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        harness.infer(client, model, inputs, OUTPUTS[model])
        times.append(time.perf_counter() - t0)
    return min(times)


# --------------------------------------------------------------------------- output parsing
_LATENCY_RE = re.compile(r"Avg request latency: (\d+) usec \((.*)\)")
_PART_RE = re.compile(r"([a-z ]+?) (\d+) usec")
_COUNTS = {"Inference count:": "inference_count", "Execution count:": "execution_count",
           "Successful request count:": "request_count"}


def _server_block(lines: list[str]) -> dict[str, float]:
    stats: dict[str, float] = {}
    for text in lines:
        for label, key in _COUNTS.items():
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
    parsed: dict[str, Any] = {"client": {}, "server": {}, "composing": {}}
    section, current, composing_name = None, [], None

    def flush() -> None:
        if section == "server":
            parsed["server"] = _server_block(current)
        elif section == "composing" and composing_name:
            parsed["composing"][composing_name] = _server_block(current)

    for line in (text[start:] if start >= 0 else text).splitlines():
        stripped = line.strip()
        m = re.match(r"^(\w+), version: (\S+)", stripped)
        if stripped.startswith("Client:"):
            section = "client"
        elif stripped.startswith("Server:") and section != "composing":
            flush()
            section, current = "server", []
        elif stripped.startswith("Composing models:"):
            flush()
            section, current, composing_name = "composing", [], None
        elif stripped.startswith(("Server Prometheus Metrics", "Inferences/Second vs.")):
            flush()
            section, current = None, []
        elif section == "composing" and m:
            flush()
            composing_name, current = m.group(1), []
        elif section == "client" and stripped.startswith("Request count:"):
            parsed["client"]["request_count"] = int(stripped.split(":")[1])
        elif section == "client" and stripped.startswith("Throughput:"):
            parsed["client"]["throughput_infer_per_s"] = float(stripped.split()[1])
        elif section in ("server", "composing"):
            current.append(stripped)
    flush()
    return parsed


# --------------------------------------------------------------------------- machine, server
def wait_for_others(patterns: Sequence[str]) -> float:
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
    with open(path, "a+") as handle:
        t0 = time.monotonic()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for the benchmark lock {path} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        wait_for_others(wait_for)
        if time.monotonic() - t0 > 1:
            log(f"lock acquired after {time.monotonic() - t0:.0f} s")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)


def metrics_reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url if "://" in url else f"http://{url}", timeout=5) as r:
            return r.status == 200 and b"nv_" in r.read(65536)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def server_info(client: Any) -> dict[str, Any]:
    meta = client.get_server_metadata()
    models = {}
    for model in MODELS:
        try:
            models[model] = bool(client.is_model_ready(model))
        except Exception:  # reported, not fatal
            models[model] = False
    return {"name": meta.name, "version": meta.version, "models_ready": models}


def machine_client() -> dict[str, Any]:
    m = harness.machine_info()
    return {"cpu_model": m["cpu"], "cores": m["cores"], "memory_gib": m["memory_GiB"],
            "platform": m["platform"], "loadavg_at_start": m["loadavg_at_start"]}


# --------------------------------------------------------------------------- sweep
def run_level(binary: Path, env: dict[str, str], args: argparse.Namespace, model: str,
              batch: int, conc: int, interval_ms: int, data_args: list[str],
              metrics: str | None, workdir: Path) -> dict[str, Any]:
    """One perf_analyzer invocation at one concurrency level; retried once if unstable."""
    stability, attempts = args.stability, []
    for attempt in (1, 2):
        csv_path = workdir / f"{model}_b{batch}_c{conc}_try{attempt}.csv"
        cmd = [str(binary), "-m", model, "-u", args.url, "-i", "grpc", "-b", str(batch),
               "--concurrency-range", str(conc), "--measurement-mode", "time_windows",
               "--measurement-interval", str(interval_ms), "--stability-percentage",
               str(stability), "--max-trials", str(args.max_trials), *data_args,
               "--verbose-csv", "-f", str(csv_path)]
        if metrics:
            cmd += ["--collect-metrics", "--metrics-url", metrics, "--metrics-interval",
                    str(min(1000, interval_ms // 4))]
        timeout = interval_ms / 1000 * (args.max_trials + 2) + 300
        if attempt > 1:
            wait_for_others(args.wait_patterns)
        log(f"{model} b{batch} c{conc}: window {interval_ms} ms, stability {stability} %"
            + (" (retry)" if attempt > 1 else ""))
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or ""
            output = out.decode(errors="replace") if isinstance(out, bytes) else out
            output += f"\n[run.py] perf_analyzer killed after {timeout:.0f} s\n"
            code = -9
        shown = ["perf_analyzer", *(
            f"{model}_b{batch}_c{conc}.csv" if c == str(csv_path) else
            "--input-data=" + Path(c.split("=", 1)[1]).name if c.startswith("--input-data=/")
            else c for c in cmd[1:])]
        record: dict[str, Any] = {
            "concurrency": conc, "attempt": attempt, "command": " ".join(shown),
            "interval_ms": interval_ms, "stability_percentage": stability, "exit_code": code,
            "elapsed_s": round(time.monotonic() - t0, 1), "console": output,
            "header": [], "rows": []}
        if code == 0 and csv_path.is_file():
            with csv_path.open(newline="") as handle:
                table = [r for r in csv.reader(handle) if r]
            if table:
                record["header"] = table[0]
                record["rows"] = [dict(zip(table[0], r, strict=False)) for r in table[1:]]
        attempts.append(record)
        if record["rows"]:
            record["status"], record["parsed"] = "ok", parse_console(output)
            break
        record["status"] = "unstable" if UNSTABLE_MARK in output else "failed"
        last = "\n".join(output.strip().splitlines()[-3:])
        log(f"{model} b{batch} c{conc}: {record['status']} (exit {code}): {last}")
        if record["status"] != "unstable":
            break
        stability *= 2
    return {"attempts": attempts, "final": attempts[-1]}


def sweep(args: argparse.Namespace, binary: Path, env: dict[str, str], workdir: Path,
          label: str) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(args.url)
    deadline = time.monotonic() + 60
    while not client.is_server_ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"error: Triton at {args.url} is not ready")
        time.sleep(1)
    info = server_info(client)
    missing = [m for m in args.models if not info["models_ready"].get(m)]
    if missing:
        raise SystemExit(f"error: models not ready on {args.url}: {missing}")
    metrics = args.metrics_url or args.url.rsplit(":", 1)[0] + ":8002/metrics"
    metrics_ok = metrics_reachable(metrics) and not args.no_metrics
    log(f"metrics {metrics}: {'collected' if metrics_ok else 'not reachable, not collected'}")
    plan, arrays = build_inputs(client, harness.phantom_stacks(), workdir, args.models,
                                args.step_data)
    runs, prefix = [], f"perf_{label}_" if label else "perf_"
    for model in args.models:
        for batch in args.batch_sizes:
            wait_for_others(args.wait_patterns)
            latency = probe_latency(client, model, arrays[model], batch)
            interval = int(min(args.max_interval_ms,
                               max(args.min_interval_ms,
                                   1000 * latency * args.requests_per_window)))
            interval = -(-interval // 500) * 500
            levels = args.concurrency if batch == 1 else args.concurrency_batched
            log(f"{model} b{batch}: probe {latency * 1000:.0f} ms/request -> window "
                f"{interval} ms, concurrency {levels}")
            levels_out, header, rows, console = [], [], [], []
            for conc in levels:
                waited = wait_for_others(args.wait_patterns)
                loadavg = [round(x, 2) for x in os.getloadavg()]
                level = run_level(binary, env, args, model, batch, conc, interval,
                                  plan[model]["args"], metrics if metrics_ok else None, workdir)
                console += [f"===== {a['command']}\n{a['console']}" for a in level["attempts"]]
                final = level["final"]
                if final["rows"]:
                    header = header or final["header"]
                    rows += [[r.get(h, "") for h in header] for r in final["rows"]]
                levels_out.append({
                    "concurrency": conc, "status": final["status"], "loadavg_at_start": loadavg,
                    "waited_for_others_s": round(waited, 1), "interval_ms": final["interval_ms"],
                    "stability_percentage": final["stability_percentage"],
                    "attempts": len(level["attempts"]),
                    "elapsed_s": sum(a["elapsed_s"] for a in level["attempts"]),
                    "command": final["command"], "parsed": final.get("parsed"),
                    "csv_row": final["rows"][0] if final["rows"] else None,
                    "error_tail": None if final["rows"]
                    else "\n".join(final["console"].strip().splitlines()[-5:]),
                })
            stem = f"{prefix}{model}_b{batch}"
            (args.results / f"{stem}.csv").unlink(missing_ok=True)  # never a stale CSV
            if header:
                with (args.results / f"{stem}.csv").open("w", newline="") as handle:
                    writer = csv.writer(handle, lineterminator="\n")
                    writer.writerow(header)
                    writer.writerows(rows)
            (args.results / f"{stem}.log").write_text("\n".join(console))
            runs.append({
                "model": model, "batch": batch,
                "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "probe_latency_s": round(latency, 4), "interval_ms": interval,
                "data": plan[model]["data"], "csv": f"{stem}.csv" if header else None,
                "log": f"{stem}.log", "levels": levels_out,
            })
    return {"server": info, "metrics_url": metrics if metrics_ok else None,
            "metrics_note": None if metrics_ok else f"{metrics} not reachable", "runs": runs}


def _identity(manifest: dict[str, Any]) -> tuple[Any, ...]:
    prov = manifest.get("provenance") or {}
    return prov.get("contract_version"), prov.get("network"), manifest.get("cpu_profile")


def merge_manifests(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the runs of ``old`` that it did not re-measure (same model and batch); when
    those measured another network, contract or CPU profile, the OLD provenance (stale)."""
    if _identity(old) != _identity(new):
        log("warning: --merge keeps runs of another network, contract or CPU profile")
        new["provenance"] = old.get("provenance")
    redone = {(r["model"], r["batch"]) for r in new["runs"]}
    kept = [r for r in old.get("runs", []) if (r["model"], r["batch"]) not in redone]
    order = {m: i for i, m in enumerate(MODELS)}
    new["runs"] = sorted(kept + new["runs"], key=lambda r: (order.get(r["model"], 9), r["batch"]))
    new["started"] = min(old.get("started", new["started"]), new["started"])
    new["merged_from"] = [*old.get("merged_from", []), old.get("argv")]
    return new


def served_profile(repo: Path, requested: str | None) -> dict[str, Any]:
    """The unet's CPU runtime profile as written into a generated repository."""
    from aspects_export.repository import CPU_RUNTIMES, cpu_bf16_supported, parse_config

    params = {k: v.string_value
              for k, v in parse_config(repo / "unet" / "config.pbtxt").parameters.items()}
    key = (params.get("runtime", "onnxruntime"), params.get("precision", "f32"))
    name = next(n for n, r in CPU_RUNTIMES.items() if (r.runtime, r.precision) == key)
    return {"requested": requested or "onnxruntime", "name": name, "runtime": key[0],
            "precision": key[1], "bf16_cpu": cpu_bf16_supported(),
            "numeric_gate": params.get("numeric_gate", "not recorded")}


def _stop(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="gRPC host:port of a running Triton serving `aspects`")
    where.add_argument("--local", action="store_true",
                       help="export the demo weights to a CPU repository and serve it")
    p.add_argument("--oracle", action="store_true", help="--local with the tiny oracle unet")
    p.add_argument("--cpu-runtime", default="auto",
                   help="--local: the unet's profile (aspects-export --cpu-runtime)")
    p.add_argument("--metrics-url", help="host:port/metrics (default: the URL's host, port 8002)")
    p.add_argument("--no-metrics", action="store_true", help="do not pass --collect-metrics")
    p.add_argument("--label", help="file label: results/perf_<label>_<model>_b<batch>.csv "
                   "(default: none for --local, 'oracle' with --oracle, 'gpu' for --url)")
    p.add_argument("--models", type=lambda s: [m for m in s.split(",") if m],
                   default=list(MODELS), help="comma-separated, default all four")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 8])
    p.add_argument("--concurrency", type=int_list,
                   help="levels for batch 1 (default 1,2,4 with --local, else 1,2,4,8,16,32)")
    p.add_argument("--concurrency-batched", type=int_list,
                   help="levels for batch > 1 (default 1,2 with --local, else = --concurrency)")
    p.add_argument("--min-interval-ms", type=int, default=5000)
    p.add_argument("--max-interval-ms", type=int, default=20000)
    p.add_argument("--requests-per-window", type=float, default=8.0,
                   help="window length = this many single-stream request latencies (clamped)")
    p.add_argument("--stability", type=float, default=30.0,
                   help="perf_analyzer --stability-percentage (doubled on the one retry)")
    p.add_argument("--max-trials", type=int, default=5)
    p.add_argument("--step-data", choices=("server", "random"), default="server")
    p.add_argument("--merge", action="store_true",
                   help="keep the other models/batches of an existing perf_[LABEL_]runs.json "
                   "(re-measure a subset, e.g. --models unet --merge)")
    p.add_argument("--results", type=Path, default=harness.RESULTS)
    p.add_argument("--server-venv", type=Path, default=harness.SERVER_VENV)
    p.add_argument("--lock", default=DEFAULT_LOCK, help="flock file; '' disables")
    p.add_argument("--wait-for", action="append",
                   help="wait until `pgrep -f PATTERN` finds nothing (repeatable)")
    args = p.parse_args(argv)
    if args.oracle and not args.local:
        p.error("--oracle needs --local")
    if bad := [m for m in args.models if m not in MODELS]:
        p.error(f"unknown models {bad}; choose from {MODELS}")
    if args.concurrency is None:
        args.concurrency = [1, 2, 4] if args.local else [1, 2, 4, 8, 16, 32]
    if args.concurrency_batched is None:
        args.concurrency_batched = [1, 2] if args.local else list(args.concurrency)
    if args.label is None:
        args.label = ("oracle" if args.oracle else "") if args.local else "gpu"
    args.wait_patterns = DEFAULT_WAIT_FOR if args.wait_for is None else tuple(args.wait_for)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Stop cleanly (server, perf_analyzer, temp dir) on SIGTERM and on SIGINT, even when
    # started in the background, where SIGINT is ignored by default.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    args.results.mkdir(parents=True, exist_ok=True)
    server_venv, label = args.server_venv.absolute(), args.label
    started = dt.datetime.now(dt.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="aspects-perf-"))
    try:
        binary, env, pa_version = prepare_perf_analyzer(server_venv, work / "lib")
        log(f"perf_analyzer {pa_version} ({binary}); libraries linked in {work / 'lib'}")
        local: dict[str, Any] | None = None
        profile: dict[str, Any] | None = None
        if args.local:
            from aspects_devkit.stack import LocalStack, cpu_repository, export_onnx_dir

            cpu_runtime = None if args.oracle else args.cpu_runtime
            onnx_dir, _ = export_onnx_dir(work / "export" / "onnx", checkpoint="demo",
                                          oracle=args.oracle)
            repo = cpu_repository(onnx_dir, work / "export" / "model_repository", cpu_runtime)
            profile = served_profile(repo, cpu_runtime)
            provenance = {**harness.provenance(None), "note": "the tiny ORACLE unet"} \
                if args.oracle else harness.provenance(harness.network_of("demo", onnx_dir))
            with bench_lock(args.lock, args.wait_patterns), LocalStack(
                    work / "export", repository=repo, server_venv=server_venv) as stack:
                args.url = stack.grpc_url
                if args.metrics_url is None:
                    args.metrics_url = stack.triton.metrics_url.removeprefix("http://")
                local = {"startup_s": round(stack.triton.startup_seconds or 0, 2),
                         "repository": "aspects-export all --layout cpu " + ("--oracle" if
                         args.oracle else f"--checkpoint demo --cpu-runtime {args.cpu_runtime}")}
                measured = sweep(args, binary, env, work, label)
        else:
            provenance = {**harness.provenance(None), "note": f"remote server {args.url}: "
                          "its network is not known here (only --local records it)"}
            host = args.url.rsplit(":", 1)[0]
            is_local = host in ("127.0.0.1", "localhost", "::1", "[::1]")
            with bench_lock(args.lock if is_local else "", args.wait_patterns):
                measured = sweep(args, binary, env, work, label)
        finished = dt.datetime.now(dt.timezone.utc)
        manifest = {
            "generated_by": "benchmarks/perf_analyzer/run.py",
            "argv": sys.argv[1:] if argv is None else list(argv), "label": label,
            "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "target": "local" if args.local else "url",
            "provenance": provenance,
            "checkpoint": None if not args.local else "ORACLE unet (not a network)"
            if args.oracle else "demo: the committed demo weights (models/demo/, trained on "
            "synthetic images only)",
            "cpu_profile": profile,
            "local_server": local, "machine_client": machine_client(),
            "perf_analyzer_version": pa_version,
            "server_venv_versions": harness.venv_versions(server_venv, (
                "nvidia-pytriton", "tritonclient", "onnxruntime", "openvino", "numpy")),
            "python": platform.python_version(),
            "settings": {k: getattr(args, k) for k in (
                "batch_sizes", "concurrency", "concurrency_batched", "min_interval_ms",
                "max_interval_ms", "requests_per_window", "stability", "max_trials",
                "step_data", "models")},
            **measured,
        }
        out = args.results / (f"perf_{label}_runs.json" if label else "perf_runs.json")
        if args.merge and out.is_file():
            manifest = merge_manifests(json.loads(out.read_text()), manifest)
        harness.write_json(out, manifest, indent=1)
        n_ok = sum(lv["status"] == "ok" for r in measured["runs"] for lv in r["levels"])
        n_all = sum(len(r["levels"]) for r in measured["runs"])
        log(f"done in {(finished - started).total_seconds():.0f} s: {n_ok}/{n_all} levels "
            f"measured; manifest {out}")
        return 0 if n_ok == n_all else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
