"""CPU Triton runtime benchmark (issue 4).

Workload: real 512x512 uint8 slices of the seeded phantom (``make_phantom(seed=3)``, 20
slices, windowed and oriented by the client's ``load_volume`` + ``prepare``), sent as the
client sends them (2.5D stacks ``[3, 512, 512]``, ``context_stacks``) through the
``aspects`` ensemble (preprocess -> unet -> postprocess) with the real effb3 unet of the
**`untrained` checkpoint (seeded, UNTRAINED weights: the labels mean nothing, the timing does)**.

* TRITON: the generated CPU repository (each step a python-backend model running its ONNX
  file with onnxruntime) served by the real ``tritonserver`` of ``nvidia-pytriton``
  (``LocalTriton``); gRPC requests of ``--batch`` slices, ``c`` requests in flight
  (c threads, one client each, a fixed number of requests per level).
* BASELINE, same run: in-process ONNX Runtime running the same three ONNX files in the
  same order with the same batch size and the same session options as the server's steps
  (intra/inter-op threads read from the generated config.pbtxt, ORT_ENABLE_ALL, CPU EP),
  single stream.
* ALSO: the seed's torch eager per-slice loop (``model(x)`` per slice, softmax/threshold/
  argmax/min-area in torch) against ONNX Runtime per slice (batch 1) and batch ``--batch``,
  on the same slices; the server's resident memory (VmRSS/VmHWM summed over tritonserver's
  process group, i.e. the server and its python-backend stubs); the size of each ONNX file;
  the GPU TensorRT FP16 rows, "not measured" here, with the commands for a GPU host.

Measurements are interleaved: every round runs every item once, the order rotating from
round to round; medians over rounds are reported.

    .venv/bin/python benchmarks/triton_cpu.py [--rounds 3] [--requests 8] [--batch 4]
        [--out benchmarks/results/triton_cpu.json]     # a .md table is written beside it
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_env import cpu_model, package_versions, server_env_versions

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "triton_cpu.json"
PHANTOM_SEED = 3
LEVELS = (1, 2, 4)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- setup
def export_models(work: Path) -> tuple[Path, Path, Any, dict[str, float]]:
    """Demo checkpoint -> three ONNX graphs -> CPU repository.  Returns (onnx_dir, repo,
    torch model, timings)."""
    from aspects_client import contract
    from aspects_export import graphs
    from aspects_export.checkpoints import UNTRAINED_CHECKPOINT_NOTE, load_model
    from aspects_export.repository import write_repository

    onnx_dir = work / "onnx"
    t0 = time.perf_counter()
    model, source = load_model("untrained")
    log(f"WARNING: {UNTRAINED_CHECKPOINT_NOTE}")
    graphs.export_unet(model, onnx_dir / f"{contract.UNET_MODEL}.onnx", {"checkpoint": source})
    graphs.export_preprocess(onnx_dir / f"{contract.PREPROCESS_MODEL}.onnx")
    graphs.export_postprocess(onnx_dir / f"{contract.POSTPROCESS_MODEL}.onnx")
    t1 = time.perf_counter()
    repo = write_repository(onnx_dir, work / "model_repository", layout="cpu")
    t2 = time.perf_counter()
    return onnx_dir, repo, model, {"onnx_export_s": t1 - t0, "repository_s": t2 - t1}


def phantom_slices() -> np.ndarray:
    """The phantom's 20 slices as 2.5D stacks uint8 [20, 3, 512, 512] (the wire format)."""
    from aspects_client import contract
    from aspects_client.preprocessing import context_stacks
    from aspects_client.slicing import prepare
    from aspects_client.volume_io import load_volume
    from aspects_synth import make_phantom

    ph = make_phantom(seed=PHANTOM_SEED)
    slices = prepare(load_volume(ph.image, name=f"phantom seed {PHANTOM_SEED}")).slices
    assert slices.dtype == np.uint8 and slices.shape[1:] == (512, 512), slices.shape
    stacks = context_stacks(slices)
    assert stacks.shape[1] == contract.NETWORK_CHANNELS, stacks.shape
    return stacks


def server_thread_settings(repo: Path) -> dict[str, dict[str, Any]]:
    """What the generated CPU configs tell triton_python_model.py to configure."""
    from aspects_client import contract
    from aspects_export.repository import parse_config

    out: dict[str, dict[str, Any]] = {}
    for name in contract.STEP_MODELS:
        cfg = parse_config(repo / name / "config.pbtxt")
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        db = cfg.dynamic_batching
        out[name] = {
            "backend": cfg.backend,
            "instance_count": sum(g.count for g in cfg.instance_group),
            "instance_kind": [
                g.__class__.Kind.Name(g.kind) if hasattr(g.__class__, "Kind") else int(g.kind)
                for g in cfg.instance_group
            ],
            "intra_op_num_threads": int(params.get("intra_op_thread_count", "0") or 0),
            "inter_op_num_threads": int(params.get("inter_op_thread_count", "0") or 0),
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "max_batch_size": cfg.max_batch_size,
            "preferred_batch_size": list(db.preferred_batch_size),
            "max_queue_delay_microseconds": db.max_queue_delay_microseconds,
        }
    return out


def ort_sessions(onnx_dir: Path, settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The three sessions, configured exactly as triton_python_model.initialize does."""
    import onnxruntime as ort

    sessions = {}
    for name, s in settings.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = s["intra_op_num_threads"]
        opts.inter_op_num_threads = s["inter_op_num_threads"]
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sessions[name] = ort.InferenceSession(
            str(onnx_dir / f"{name}.onnx"), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    return sessions


def batches(slices: np.ndarray, batch: int, count: int) -> list[np.ndarray]:
    """``count`` request payloads of ``batch`` stacks, cycling through the volume."""
    n = slices.shape[0]
    out = []
    for i in range(count):
        idx = [(i * batch + j) % n for j in range(batch)]
        out.append(np.ascontiguousarray(slices[idx]))
    return out


# --------------------------------------------------------------------------- measurements
def ort_pipeline(sessions: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    t0 = time.perf_counter()
    (image,) = sessions["preprocess"].run(["IMAGE"], {"SLICES": x})
    t1 = time.perf_counter()
    (logits,) = sessions["unet"].run(["LOGITS"], {"IMAGE": image})
    t2 = time.perf_counter()
    labels, conf = sessions["postprocess"].run(
        ["LABELS", "CONFIDENCE"], {"LOGITS": logits, "SLICES": x}
    )
    t3 = time.perf_counter()
    return labels, conf, {"preprocess": t1 - t0, "unet": t2 - t1, "postprocess": t3 - t2}


def run_ort(sessions: dict[str, Any], payloads: list[np.ndarray]) -> dict[str, Any]:
    stages = {"preprocess": 0.0, "unet": 0.0, "postprocess": 0.0}
    lat = []
    t0 = time.perf_counter()
    for x in payloads:
        r0 = time.perf_counter()
        _, _, st = ort_pipeline(sessions, x)
        lat.append(time.perf_counter() - r0)
        for k, v in st.items():
            stages[k] += v
    wall = time.perf_counter() - t0
    n_slices = sum(p.shape[0] for p in payloads)
    return {
        "slices": n_slices,
        "wall_s": wall,
        "slices_per_s": n_slices / wall,
        "latency_median_s": statistics.median(lat),
        "stage_s_per_slice": {k: v / n_slices for k, v in stages.items()},
    }


def _stats(client: Any) -> dict[str, dict[str, Any]]:
    raw = client.get_inference_statistics(as_json=True)
    out = {}
    for m in raw.get("model_stats", []):
        inf = m.get("inference_stats", {})
        out[m["name"]] = {
            "inference_count": int(m.get("inference_count", 0)),
            "execution_count": int(m.get("execution_count", 0)),
            **{
                f"{k}_ns": int(inf.get(k, {}).get("ns", 0))
                for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")
            },
            "batch": {
                int(b["batch_size"]): int(b.get("compute_infer", {}).get("count", 0))
                for b in m.get("batch_stats", [])
            },
        }
    return out


def _stats_delta(before: dict, after: dict, n_slices: int) -> dict[str, Any]:
    out = {}
    for name, a in after.items():
        b = before.get(name, {"batch": {}})
        d_exec = a["execution_count"] - b.get("execution_count", 0)
        d_inf = a["inference_count"] - b.get("inference_count", 0)
        entry: dict[str, Any] = {"executions": d_exec, "inferences": d_inf}
        for k in ("queue_ns", "compute_input_ns", "compute_infer_ns", "compute_output_ns"):
            entry[k.replace("_ns", "_ms_per_slice")] = (a[k] - b.get(k, 0)) / 1e6 / max(1, n_slices)
        batch_hist = {
            bs: c - b["batch"].get(bs, 0)
            for bs, c in a["batch"].items()
            if c - b["batch"].get(bs, 0) > 0
        }
        entry["executions_by_batch_size"] = dict(sorted(batch_hist.items()))
        out[name] = entry
    return out


def run_triton(url: str, payloads: list[np.ndarray], concurrency: int) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient

    clients = [grpcclient.InferenceServerClient(url) for _ in range(concurrency)]
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("LABELS", "CONFIDENCE")]
    lock = threading.Lock()
    next_index = [0]
    lat: list[float] = []
    errors: list[str] = []

    def worker(client: Any) -> None:
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= len(payloads):
                return
            x = payloads[i]
            inp = grpcclient.InferInput("SLICES", list(x.shape), "UINT8")
            inp.set_data_from_numpy(x)
            r0 = time.perf_counter()
            try:
                res = client.infer("aspects", [inp], outputs=outputs, client_timeout=600)
                labels = res.as_numpy("LABELS")
                assert labels is not None and labels.shape == (x.shape[0], *x.shape[2:])
            except Exception as exc:  # reported, not hidden
                with lock:
                    errors.append(str(exc)[:300])
                return
            with lock:
                lat.append(time.perf_counter() - r0)

    stats_client = clients[0]
    before = _stats(stats_client)
    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = _stats(stats_client)
    for c in clients:
        c.close()
    if errors:
        raise RuntimeError(f"Triton requests failed: {errors[:3]}")
    n_slices = sum(p.shape[0] for p in payloads)
    return {
        "concurrency": concurrency,
        "slices": n_slices,
        "wall_s": wall,
        "slices_per_s": n_slices / wall,
        "latency_median_s": statistics.median(lat),
        "server": _stats_delta(before, after, n_slices),
    }


def torch_seed_loop(model: Any, slices: np.ndarray) -> tuple[float, np.ndarray]:
    """The seed's per-slice loop: preprocess one slice (its 2.5D stack), model(x), softmax in
    torch, then the contract's threshold / argmax / per-class min-area (also in torch)."""
    import torch

    from aspects_client import contract
    from aspects_client.preprocessing import network_input

    out = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in slices:
            x = torch.from_numpy(network_input(s[None]))
            logits = model(x)
            probs = torch.softmax(logits, dim=1)
            maxp, arg = probs.max(dim=1)
            labels = torch.where(maxp >= contract.THRESHOLD_PROB, arg, torch.zeros_like(arg))
            counts = torch.bincount(labels.flatten(), minlength=contract.NUM_CLASSES)
            small = counts < contract.MIN_AREA_PIXELS
            small[contract.BACKGROUND_INDEX] = False
            labels = torch.where(small[labels], torch.zeros_like(labels), labels)
            out.append(labels[0].to(torch.uint8).numpy())
    return time.perf_counter() - t0, np.stack(out)


def ort_per_slice(sessions: dict[str, Any], slices: np.ndarray) -> tuple[float, np.ndarray]:
    out = []
    t0 = time.perf_counter()
    for s in slices:
        labels, _, _ = ort_pipeline(sessions, np.ascontiguousarray(s[None]))
        out.append(labels[0])
    return time.perf_counter() - t0, np.stack(out)


# --------------------------------------------------------------------------- memory
def _proc_status(pid: int) -> dict[str, int]:
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(rest.split()[0])  # kB
    except OSError:
        pass
    return fields


def _proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _pgid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            for c in text:
                found.add(int(c))
                found |= _children(int(c))
    except OSError:
        pass
    return found


def server_memory(pid: int) -> dict[str, Any]:
    """VmRSS/VmHWM of tritonserver and every process in its group (the python stubs)."""
    pids = {pid} | _children(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _pgid(int(entry.name)) == pid:
            pids.add(int(entry.name))
    procs = []
    for p in sorted(pids):
        st = _proc_status(p)
        if st:
            procs.append(
                {"pid": p, "name": _proc_name(p), **{f"{k}_MiB": v / 1024 for k, v in st.items()}}
            )
    total = {
        k: sum(pr.get(f"{k}_MiB", 0.0) for pr in procs)
        for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
    }
    return {"processes": procs, "sum_MiB": total}


# --------------------------------------------------------------------------- CPU accounting
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _group_pids(pgid: int | None) -> set[int]:
    if pgid is None:
        return set()
    return {
        int(e.name)
        for e in Path("/proc").iterdir()
        if e.name.isdigit() and _pgid(int(e.name)) == pgid
    }


def _proc_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (all threads)
    except (OSError, ValueError, IndexError):
        return 0


def cpu_snapshot(server_pid: int | None) -> dict[str, float]:
    """Machine busy/steal ticks and the ticks of our own processes (this one + the server's
    process group), to tell how much CPU other tenants took during a measurement."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = vals[:8]
    own = _proc_ticks(os.getpid()) + sum(_proc_ticks(p) for p in _group_pids(server_pid))
    return {
        "t": time.perf_counter(),
        "busy": user + nice + system + irq + softirq,
        "steal": steal,
        "own": own,
    }


def cpu_delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    wall = b["t"] - a["t"]
    cores = os.cpu_count() or 1
    foreign = max(0.0, ((b["busy"] - a["busy"]) - (b["own"] - a["own"])) / CLK_TCK)
    steal = (b["steal"] - a["steal"]) / CLK_TCK
    return {
        "own_cpu_s": (b["own"] - a["own"]) / CLK_TCK,
        "foreign_cpu_s": foreign,
        "steal_s": steal,
        "foreign_share_of_machine": foreign / (wall * cores) if wall > 0 else 0.0,
    }


def wait_quiet(
    server_pid: int | None, threshold: float, max_wait_s: float, window_s: float = 1.5
) -> float:
    """Wait (at most max_wait_s) for a window in which other tenants use < threshold of the
    machine; returns the seconds waited."""
    began = time.perf_counter()
    while time.perf_counter() - began < max_wait_s:
        a = cpu_snapshot(server_pid)
        time.sleep(window_s)
        if cpu_delta(a, cpu_snapshot(server_pid))["foreign_share_of_machine"] < threshold:
            break
    return time.perf_counter() - began


# --------------------------------------------------------------------------- report
def machine_info() -> dict[str, Any]:

    cpu = cpu_model()
    import onnxruntime
    import torch

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime (client/baseline)": onnxruntime.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    versions |= package_versions(("segmentation-models-pytorch", "tritonclient", "onnx"))
    versions.update(server_env_versions())
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_at_start": load,
        "versions": versions,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


GPU_COMMANDS = [
    "# on the GPU host, inside nvcr.io/nvidia/tritonserver:24.10-py3 (or tensorrt:24.10-py3) "
    "with this project installed:",
    "aspects-export onnx --checkpoint CKPT --out build/onnx",
    "aspects-export tensorrt --onnx build/onnx/unet.onnx --out build/onnx",
    "aspects-export repository --onnx-dir build/onnx --out build/model_repository "
    "--layout gpu --engine build/onnx/unet.plan",
    "#   (or in one go: aspects-export all --checkpoint CKPT --out build --layout gpu --tensorrt)",
    "docker run --gpus all --rm --shm-size=1g -p8000:8000 -p8001:8001 -p8002:8002 "
    "-v $PWD/build/model_repository:/models nvcr.io/nvidia/tritonserver:24.10-py3 "
    "tritonserver --model-repository=/models",
    "perf_analyzer -m aspects -i grpc -u localhost:8001 -b 4 --shape SLICES:3,512,512 "
    "--concurrency-range 1:4 --measurement-interval 20000   # slices/s = infer/s x 4",
]


def median_of(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    ort_rounds = raw["rounds"]["ort_inprocess"]
    ort_med = median_of(ort_rounds, "slices_per_s")
    summary: dict[str, Any] = {
        "ort_inprocess_slices_per_s": ort_med,
        "ort_inprocess_stage_ms_per_slice": {
            k: 1e3 * statistics.median(r["stage_s_per_slice"][k] for r in ort_rounds)
            for k in ("preprocess", "unet", "postprocess")
        },
        "triton": {},
    }
    summary["ort_inprocess_slices_per_own_cpu_s"] = median_of(ort_rounds, "slices_per_own_cpu_s")
    clean_ort = [
        r["slices_per_s"] for r in ort_rounds if r["cpu"]["foreign_share_of_machine"] < 0.2
    ]
    summary["ort_inprocess_clean_median"] = statistics.median(clean_ort) if clean_ort else None
    for c in raw["levels"]:
        rs = raw["rounds"][f"triton_c{c}"]
        med = median_of(rs, "slices_per_s")
        clean = [r["slices_per_s"] for r in rs if r["cpu"]["foreign_share_of_machine"] < 0.2]
        clean_med = statistics.median(clean) if clean else None
        eff = median_of(rs, "slices_per_own_cpu_s")
        summary["triton"][c] = {
            "slices_per_s": med,
            "per_round": [r["slices_per_s"] for r in rs],
            "latency_median_s": median_of(rs, "latency_median_s"),
            "ratio_vs_inprocess": med / ort_med,
            "clean_median_slices_per_s": clean_med,
            "clean_rounds": len(clean),
            "clean_ratio": (
                clean_med / summary["ort_inprocess_clean_median"]
                if clean_med and summary["ort_inprocess_clean_median"]
                else None
            ),
            "slices_per_own_cpu_s": eff,
            "cpu_efficiency_ratio": eff / summary["ort_inprocess_slices_per_own_cpu_s"],
            "paired_ratio_per_round": [
                t["slices_per_s"] / o["slices_per_s"] for t, o in zip(rs, ort_rounds, strict=True)
            ],
            "paired_ratio_median": statistics.median(
                t["slices_per_s"] / o["slices_per_s"] for t, o in zip(rs, ort_rounds, strict=True)
            ),
            "unet_batches": rs[-1]["server"].get("unet", {}).get("executions_by_batch_size"),
            "server_ms_per_slice": {
                m: {
                    k: statistics.median(r["server"][m][k] for r in rs)
                    for k in (
                        "queue_ms_per_slice",
                        "compute_input_ms_per_slice",
                        "compute_infer_ms_per_slice",
                        "compute_output_ms_per_slice",
                    )
                }
                for m in ("preprocess", "unet", "postprocess")
                if all(m in r["server"] for r in rs)
            },
        }
    tr = raw["rounds"]["torch_vs_ort"]
    summary["torch_eager_per_slice_slices_per_s"] = statistics.median(
        r["torch_slices_per_s"] for r in tr
    )
    summary["ort_per_slice_batch1_slices_per_s"] = statistics.median(
        r["ort_b1_slices_per_s"] for r in tr
    )
    summary["ort_b1_over_torch_paired_median"] = statistics.median(
        r["ort_b1_slices_per_s"] / r["torch_slices_per_s"] for r in tr
    )
    summary["foreign_cpu_share_median"] = statistics.median(
        r["cpu"]["foreign_share_of_machine"] for rs in raw["rounds"].values() for r in rs
    )
    summary["torch_vs_ort_label_agreement"] = tr[-1]["label_agreement"]
    summary["torch_labels_nonbackground_fraction"] = tr[-1]["torch_nonbackground"]
    return summary


def write_markdown(res: dict[str, Any], path: Path) -> None:
    s = res["summary"]
    m = res["machine"]
    cfg = res["config"]
    lines = [
        "# Triton CPU runtime benchmark (issue 4)",
        "",
        f"Generated by `benchmarks/triton_cpu.py` on {m['date']}. Machine: {m['cpu']}, "
        f"{m['cores']} cores ({m['platform']}); load average at start {m['loadavg_at_start']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
        f"**Checkpoint: `untrained` — seeded, UNTRAINED weights** (real effb3 Unet architecture, "
        f"so the compute is real; the labels mean nothing). Slices: {cfg['slices_source']}. "
        f"Requests of {cfg['batch']} slices; {cfg['requests_per_level']} requests "
        f"({cfg['requests_per_level'] * cfg['batch']} slices) per measurement; "
        f"{cfg['rounds']} interleaved rounds, order rotating; before each measurement the "
        "script waits (≤ 20 s) for other tenants to fall below 15 % of the machine and "
        "repeats a measurement once if they took more than 25 % (the cleaner one is kept); "
        "medians reported.",
        "",
        "## Throughput: Triton (CPU, python backend + onnxruntime) vs in-process ONNX Runtime",
        "",
        "| runtime | concurrency | slices/s (median) | per round (other tenants' share of "
        "the CPU) | median latency / request | median ÷ baseline median | per-round paired "
        "ratio (median) | unet executions by batch size (last round) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def per_round(rs: list[dict[str, Any]]) -> str:
        return ", ".join(
            f"{r['slices_per_s']:.3f} ({100 * r['cpu']['foreign_share_of_machine']:.0f}%)"
            for r in rs
        )

    lines.append(
        "| in-process ORT (baseline) | 1 (single stream) | "
        f"{s['ort_inprocess_slices_per_s']:.3f} | "
        + per_round(res["rounds"]["ort_inprocess"])
        + f" | {median_of(res['rounds']['ort_inprocess'], 'latency_median_s'):.2f} s | 1.00× | "
        f"1.00× | {cfg['batch']} (every run) |"
    )
    for c, t in s["triton"].items():
        ok = "✓" if t["paired_ratio_median"] >= 0.9 else "✗"
        lines.append(
            f"| Triton `aspects` ensemble, gRPC | {c} | {t['slices_per_s']:.3f} | "
            + per_round(res["rounds"][f"triton_c{c}"])
            + f" | {t['latency_median_s']:.2f} s | {t['ratio_vs_inprocess']:.2f}× | "
            f"**{t['paired_ratio_median']:.2f}×** {ok} ("
            + ", ".join(f"{v:.2f}" for v in t["paired_ratio_per_round"])
            + f") | {t['unet_batches']} |"
        )
    lines += [
        "",
        "Goal: Triton ≥ 0.9× the in-process throughput. The paired ratio divides each round's "
        "Triton figure by the same round's baseline (both measured within about a minute), "
        "which cancels most of the drift caused by other tenants of this shared 2-core VM; "
        "'other tenants' is the machine's busy CPU time (/proc/stat) minus the CPU time of "
        "this process and the server's process group, as a share of all cores × wall time. "
        f"Median share over all measurements: {100 * s['foreign_cpu_share_median']:.0f}%.",
        "",
        "Load-robust views of the same measurements: medians over the measurements during "
        "which other tenants took < 20 % of the machine, and slices per CPU-second spent by "
        "our own processes (this process + tritonserver's process group; the in-process "
        "baseline is this process alone), i.e. the cost of a slice, which other tenants "
        "barely change:",
        "",
        "| runtime | concurrency | clean median slices/s (n) | ratio (clean) | "
        "slices per own CPU-s | ratio (CPU cost) |",
        "|---|---|---|---|---|---|",
    ]
    clean_ort = s["ort_inprocess_clean_median"]
    n_clean_ort = sum(
        r["cpu"]["foreign_share_of_machine"] < 0.2 for r in res["rounds"]["ort_inprocess"]
    )
    lines.append(
        "| in-process ORT | 1 | "
        + (f"{clean_ort:.3f} ({n_clean_ort})" if clean_ort else "— (0)")
        + f" | 1.00× | {s['ort_inprocess_slices_per_own_cpu_s']:.3f} | 1.00× |"
    )
    for c, t in s["triton"].items():
        cm = t["clean_median_slices_per_s"]
        cr = t["clean_ratio"]
        lines.append(
            f"| Triton | {c} | "
            + (f"{cm:.3f} ({t['clean_rounds']})" if cm else "— (0)")
            + " | "
            + (f"{cr:.2f}×" if cr else "—")
            + f" | {t['slices_per_own_cpu_s']:.3f} | {t['cpu_efficiency_ratio']:.2f}× |"
        )
    lines += [
        "",
        "In-process stage times (ms per slice, median): "
        + ", ".join(f"{k} {v:.1f}" for k, v in s["ort_inprocess_stage_ms_per_slice"].items())
        + ".",
        "",
        "Server-side time per slice (ms, median over rounds; Triton statistics, deltas per "
        "level; compute_infer of a python-backend step = the stub's `execute`, i.e. "
        "onnxruntime + tensor handling):",
        "",
        "| concurrency | step | queue | compute_input | compute_infer | compute_output |",
        "|---|---|---|---|---|---|",
    ]
    for c, t in s["triton"].items():
        for step, v in t["server_ms_per_slice"].items():
            lines.append(
                f"| {c} | {step} | {v['queue_ms_per_slice']:.1f} | "
                f"{v['compute_input_ms_per_slice']:.1f} | {v['compute_infer_ms_per_slice']:.1f} | "
                f"{v['compute_output_ms_per_slice']:.1f} |"
            )
    lines += [
        "",
        "### Thread settings (the server's sessions; the baseline uses the same)",
        "",
        "| step | backend | instances | intra_op_num_threads | inter_op_num_threads | "
        "dynamic batching |",
        "|---|---|---|---|---|---|",
    ]
    for step, v in res["thread_settings"].items():
        lines.append(
            f"| {step} | {v['backend']} | {v['instance_count']} × {v['instance_kind']} | "
            f"{v['intra_op_num_threads']}"
            f"{' (ORT default = physical cores)' if v['intra_op_num_threads'] == 0 else ''} | "
            f"{v['inter_op_num_threads']} | preferred {v['preferred_batch_size']}, "
            f"delay {v['max_queue_delay_microseconds']} µs |"
        )
    lines += [
        "",
        "The baseline is single-stream: `unet` already uses every core (intra-op 0 = "
        f"{m['cores']} threads here), so running several in-process streams at once only "
        "oversubscribes the cores; the single stream is the in-process ceiling that Triton's "
        "concurrency levels are compared with.",
        "",
        "## Torch eager (seed's per-slice loop) vs ONNX Runtime, same slices, same run",
        "",
        "| runtime | slices/s (median) |",
        "|---|---|",
        f"| torch eager, per slice (`model(x)`, softmax/threshold/argmax/min-area in torch), "
        f"{m['versions']['torch_threads']} torch threads | "
        f"{s['torch_eager_per_slice_slices_per_s']:.3f} |",
        f"| ONNX Runtime, three graphs, per slice (batch 1) | "
        f"{s['ort_per_slice_batch1_slices_per_s']:.3f} |",
        f"| ONNX Runtime, three graphs, batch {cfg['batch']} | "
        f"{s['ort_inprocess_slices_per_s']:.3f} |",
        "",
        f"ORT / torch (per slice, paired per round, median): "
        f"{s['ort_b1_over_torch_paired_median']:.2f}×; per round: "
        + ", ".join(
            f"torch {r['torch_slices_per_s']:.3f} / ORT {r['ort_b1_slices_per_s']:.3f} "
            f"({100 * r['cpu']['foreign_share_of_machine']:.0f}% other tenants)"
            for r in res["rounds"]["torch_vs_ort"]
        )
        + ". "
        f"Label agreement torch vs ORT: {s['torch_vs_ort_label_agreement']:.5f} of pixels "
        f"(non-background fraction {s['torch_labels_nonbackground_fraction']:.4f}; untrained "
        "weights).",
        "",
        "## Server resident memory (after the run)",
        "",
        "Summed over tritonserver's process group (the server + one python-backend stub per "
        "model instance). RssShmem is the Python backend's shared-memory regions (tmpfs), "
        "counted in every process that maps them.",
        "",
        "| process | pid | VmRSS MiB | VmHWM MiB | RssAnon MiB | RssShmem MiB |",
        "|---|---|---|---|---|---|",
    ]
    mem = res["server_memory"]
    for p in mem["processes"]:
        lines.append(
            f"| {p['name']} | {p['pid']} | {p.get('VmRSS_MiB', 0):.0f} | "
            f"{p.get('VmHWM_MiB', 0):.0f} | {p.get('RssAnon_MiB', 0):.0f} | "
            f"{p.get('RssShmem_MiB', 0):.0f} |"
        )
    t = mem["sum_MiB"]
    lines.append(
        f"| **sum** | | **{t['VmRSS']:.0f}** | {t['VmHWM']:.0f} | {t['RssAnon']:.0f} | "
        f"{t['RssShmem']:.0f} |"
    )
    lines += [
        "",
        "## ONNX files",
        "",
        "| file | bytes | MiB |",
        "|---|---|---|",
    ]
    for name, size in res["onnx_bytes"].items():
        lines.append(f"| {name} | {size} | {size / 2**20:.2f} |")
    lines += [
        "",
        "## GPU (TensorRT FP16)",
        "",
        "| runtime | concurrency | slices/s |",
        "|---|---|---|",
    ]
    for c in LEVELS:
        lines.append(
            f"| Triton `aspects`, unet TensorRT FP16, pre/post ORT on GPU | {c} | "
            "not measured (no GPU here) |"
        )
    lines.append("| TensorRT FP16 vs ORT label agreement | | not measured (no GPU here) |")
    lines += ["", "Commands for a GPU host:", "", "```bash", *GPU_COMMANDS, "```", ""]
    if res.get("analysis"):
        lines += ["## Analysis", "", res["analysis"], ""]
    path.write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=8, help="requests per measurement")
    ap.add_argument("--batch", type=int, default=4, help="slices per request")
    ap.add_argument("--torch-slices", type=int, default=6)
    ap.add_argument("--levels", default="1,2,4")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--quiet",
        type=float,
        default=0.15,
        help="wait (<= 20 s) for other tenants below this share before each item",
    )
    ap.add_argument(
        "--retry-above",
        type=float,
        default=0.25,
        help="repeat an item measured while other tenants took more than this",
    )
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument(
        "--max-minutes", type=float, default=9.0, help="after this, no more waiting or retries"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary export directory")
    args = ap.parse_args(argv)
    levels = tuple(int(v) for v in args.levels.split(","))

    from aspects_client.local_triton import LocalTriton

    started = time.perf_counter()
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="aspects-bench-triton-"))
    try:
        log(f"exporting the untrained checkpoint to {work}")
        onnx_dir, repo, model, export_times = export_models(work)
        onnx_bytes = {p.name: p.stat().st_size for p in sorted(onnx_dir.glob("*.onnx"))}
        log(f"export done {export_times}; sizes {onnx_bytes}")
        slices = phantom_slices()
        log(f"phantom slices {slices.shape} {slices.dtype}")
        settings = server_thread_settings(repo)
        log(f"server step settings: {json.dumps(settings)}")
        sessions = ort_sessions(onnx_dir, settings)
        payloads = batches(slices, args.batch, args.requests)
        torch_slices = slices[: args.torch_slices]

        # warm-up of the in-process side
        ort_pipeline(sessions, payloads[0])
        ort_per_slice(sessions, torch_slices[:1])
        torch_seed_loop(model, torch_slices[:1])

        rounds: dict[str, list[dict[str, Any]]] = {
            "ort_inprocess": [],
            "torch_vs_ort": [],
            **{f"triton_c{c}": [] for c in levels},
        }
        server_log = work / "tritonserver.log"
        with LocalTriton(repo, log_path=server_log) as server:
            log(f"tritonserver ready in {server.startup_seconds:.1f} s, pid {server.pid}")
            # warm-up: one request alone, then max-concurrency burst (bigger dynamic batches)
            run_triton(server.grpc_url, payloads[:1], 1)
            run_triton(server.grpc_url, payloads[: max(levels)], max(levels))
            log("warm-up done")

            def measure(item: str, server: Any) -> dict[str, Any]:
                snap = cpu_snapshot(server.pid)
                if item == "ort_inprocess":
                    res = run_ort(sessions, payloads)
                elif item == "torch_vs_ort":
                    t_torch, lab_torch = torch_seed_loop(model, torch_slices)
                    t_ort, lab_ort = ort_per_slice(sessions, torch_slices)
                    n = len(torch_slices)
                    res = {
                        "slices": n,
                        "torch_s": t_torch,
                        "ort_b1_s": t_ort,
                        "torch_slices_per_s": n / t_torch,
                        "ort_b1_slices_per_s": n / t_ort,
                        "label_agreement": float(np.mean(lab_torch == lab_ort)),
                        "torch_nonbackground": float(np.mean(lab_torch != 0)),
                    }
                    res["slices_per_s"] = res["torch_slices_per_s"]
                else:
                    res = run_triton(server.grpc_url, payloads, int(item.removeprefix("triton_c")))
                res["cpu"] = cpu_delta(snap, cpu_snapshot(server.pid))
                res["slices_per_own_cpu_s"] = res["slices"] / max(1e-9, res["cpu"]["own_cpu_s"])
                return res

            items = ["ort_inprocess", *[f"triton_c{c}" for c in levels], "torch_vs_ort"]
            for r in range(args.rounds):
                order = items[r % len(items) :] + items[: r % len(items)]
                for item in order:
                    attempts = []
                    for _attempt in range(1 + args.retries):
                        late = time.perf_counter() - started > 60 * args.max_minutes
                        waited = 0.0 if late else wait_quiet(server.pid, args.quiet, 20.0)
                        res = measure(item, server)
                        res["waited_for_quiet_s"] = waited
                        attempts.append(res)
                        share = 100 * res["cpu"]["foreign_share_of_machine"]
                        log(
                            f"round {r + 1} {item}: {res['slices_per_s']:.3f} slices/s "
                            f"[other tenants {share:.0f}%]"
                        )
                        if share < 100 * args.retry_above or late:
                            break
                    best = min(attempts, key=lambda a: a["cpu"]["foreign_share_of_machine"])
                    best["attempts"] = [
                        {"slices_per_s": a["slices_per_s"], "cpu": a["cpu"]} for a in attempts
                    ]
                    best["round"] = r + 1
                    rounds[item].append(best)
                    extra = ""
                    if item == "torch_vs_ort":
                        extra += f" (ORT b1 {best['ort_b1_slices_per_s']:.3f})"
                    elif item.startswith("triton"):
                        hist = best["server"].get("unet", {}).get("executions_by_batch_size")
                        extra += f" unet batches {hist}"
                    log(f"  kept: {best['slices_per_s']:.3f} slices/s{extra}")
            memory = server_memory(server.pid)
            log(f"server memory: {memory['sum_MiB']}")
            log_tail = server.log_tail(15)

        raw = {
            "levels": list(levels),
            "rounds": rounds,
        }
        result = {
            "benchmark": "triton_cpu (issue 4)",
            "checkpoint": "untrained — seeded, UNTRAINED weights (real effb3 Unet compute)",
            "machine": machine,
            "config": {
                "batch": args.batch,
                "requests_per_level": args.requests,
                "rounds": args.rounds,
                "levels": list(levels),
                "torch_slices": args.torch_slices,
                "slices_source": f"make_phantom(seed={PHANTOM_SEED}) 512x512x20 float32 -> "
                "load_volume + prepare -> uint8 [20,512,512] -> 2.5D stacks [20,3,512,512], "
                "requests cycle through them",
            },
            "export_times_s": export_times,
            "onnx_bytes": onnx_bytes,
            "thread_settings": settings,
            "server_memory": memory,
            "server_log_tail": log_tail,
            "gpu_tensorrt_fp16": {
                "status": "not measured (no GPU here)",
                "commands": GPU_COMMANDS,
            },
            **raw,
        }
        result["summary"] = summarise(raw)
        result["total_seconds"] = time.perf_counter() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        write_markdown(result, args.out.with_suffix(".md"))
        log(
            f"wrote {args.out} and {args.out.with_suffix('.md')} in {result['total_seconds']:.0f} s"
        )
        print(json.dumps(result["summary"], indent=2))
        return 0
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
