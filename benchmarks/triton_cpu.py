"""CPU Triton runtime benchmark (issue 4; benchmarks/README.md): the `aspects` ensemble served
by the local ``tritonserver`` (demo weights, ``--cpu-runtime auto``) against the sessions the
server builds run in-process, and the seed's torch eager per-slice loop, on the client's 2.5D
stacks of ``make_phantom(seed=3)``; interleaved rounds, other tenants accounted.

    flock /tmp/aspects-bench.lock .venv/bin/python benchmarks/triton_cpu.py [--rounds 3]
        [--requests 20] [--batch 4] [--cpu-runtime auto]   # -> results/triton_cpu.{json,md}
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np
from harness import md_table, median_of, share

from aspects_client.server_reference import network_input, resize_labels
from aspects_export.repository import cpu_config, load_committed_configs, parse_config
from aspects_export.triton_python_model import build_session

STAGES = ("preprocess", "unet", "postprocess")
SERVER_MS = ("queue_ms_per_slice", "compute_input_ms_per_slice", "compute_infer_ms_per_slice",
             "compute_output_ms_per_slice")
MEMORY = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
OPTIONS = [
    ("--rounds", 3), ("--requests", 20, "requests per measurement"),
    ("--batch", 4, "slices (2.5D stacks) per request"), ("--torch-slices", 6),
    ("--levels", "1,2,4"),
    ("--cpu-runtime", "auto", "the unet's CPU runtime profile (aspects-export --cpu-runtime)"),
    ("--quiet", 0.15, "wait (<= 20 s) for other tenants below this share before each item"),
    ("--retry-above", 0.25, "repeat an item measured while other tenants took more than this"),
    ("--retries", 1), ("--max-minutes", 9.0, "after this, no more waiting or retries"),
    ("--keep", False, "keep the temporary export directory")]


def server_thread_settings(repo: Path) -> dict[str, dict[str, Any]]:
    """What the generated CPU configs tell triton_python_model.py (``params``) to configure."""
    out: dict[str, dict[str, Any]] = {}
    for name in STAGES:
        cfg = parse_config(repo / name / "config.pbtxt")
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        out[name] = {
            "params": params, "runtime": params.get("runtime", "onnxruntime"),
            "precision": params.get("precision", "f32"), "backend": cfg.backend,
            "instance_count": sum(g.count for g in cfg.instance_group),
            "instance_kind": [g.__class__.Kind.Name(g.kind) for g in cfg.instance_group],
            "intra_op_num_threads": int(params.get("intra_op_thread_count", "0") or 0),
            "inter_op_num_threads": int(params.get("inter_op_thread_count", "0") or 0),
            "openvino_performance_hint": params.get("openvino_performance_hint"),
            "max_batch_size": cfg.max_batch_size,
            "preferred_batch_size": list(cfg.dynamic_batching.preferred_batch_size),
            "max_queue_delay_microseconds": cfg.dynamic_batching.max_queue_delay_microseconds}
    return out


def step_sessions(onnx_dir: Path, settings: dict[str, dict[str, Any]],
                  unet_profile: str | None = None) -> dict[str, Any]:
    """The sessions the server's stubs build (``build_session`` with each config's parameters);
    ``unet_profile``: the unet with those the exporter writes for that profile instead."""
    sessions = {}
    for name, s in settings.items():
        params = s["params"] if unet_profile is None or name != "unet" else {
            k: v.string_value for k, v in cpu_config(load_committed_configs()[name],
                                                     unet_profile).parameters.items()}
        sessions[name] = build_session(str(onnx_dir / f"{name}.onnx"), params)
    return sessions


def ort_pipeline(sessions: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, dict]:
    """The three steps in-process on one request; (labels, seconds per step)."""
    t0 = time.perf_counter()
    (image,) = sessions["preprocess"].run(["IMAGE"], {"SLICES": x})
    t1 = time.perf_counter()
    (logits,) = sessions["unet"].run(["LOGITS"], {"IMAGE": image})
    t2 = time.perf_counter()
    labels, _ = sessions["postprocess"].run(["LABELS", "CONFIDENCE"],
                                            {"LOGITS": logits, "SLICES": x})
    t3 = time.perf_counter()
    return labels, {"preprocess": t1 - t0, "unet": t2 - t1, "postprocess": t3 - t2}


def run_ort(sessions: dict[str, Any], payloads: list[np.ndarray]) -> dict[str, Any]:
    """Every request in-process, one after another (the baseline)."""
    stages, lat = dict.fromkeys(STAGES, 0.0), []
    t0 = time.perf_counter()
    for x in payloads:
        r0 = time.perf_counter()
        for k, v in ort_pipeline(sessions, x)[1].items():
            stages[k] += v
        lat.append(time.perf_counter() - r0)
    wall, n = time.perf_counter() - t0, sum(p.shape[0] for p in payloads)
    return {"slices": n, "wall_s": wall, "slices_per_s": n / wall,
            "latency_median_s": statistics.median(lat),
            "stage_s_per_slice": {k: v / n for k, v in stages.items()}}


def torch_vs_ort(model: Any, ort_fp32: dict[str, Any], profile: dict[str, Any] | None,
                 slices: np.ndarray) -> dict[str, Any]:
    """The seed's per-slice loop (``model(x)``, softmax / threshold / argmax / min-area in torch)
    against the three graphs per slice on ONNX Runtime FP32 and on the served ``profile``."""
    import torch

    def per_slice(sessions: dict[str, Any]) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        labels = np.concatenate([ort_pipeline(sessions, np.ascontiguousarray(s[None]))[0]
                                 for s in slices])
        return labels, time.perf_counter() - t

    t0 = time.perf_counter()
    lab_torch = np.concatenate([harness.torch_labels(
        model, torch.from_numpy(network_input(s[None])), min_area=True) for s in slices])
    t1, n = time.perf_counter(), len(slices)
    lab_ort, ort_s = per_slice(ort_fp32)
    lab_torch = resize_labels(lab_torch, slices.shape[2:])  # network size → H×W, as the server
    out = {"slices": n, "torch_s": t1 - t0, "ort_b1_s": ort_s,
           "torch_slices_per_s": n / (t1 - t0), "ort_b1_slices_per_s": n / ort_s,
           "label_agreement": float(np.mean(lab_torch == lab_ort)),
           "torch_nonbackground": float(np.mean(lab_torch != 0)),
           "slices_per_s": n / (t1 - t0)}
    if profile is not None:
        lab_profile, profile_s = per_slice(profile)
        out |= {"profile_b1_s": profile_s, "profile_b1_slices_per_s": n / profile_s,
                "profile_vs_torch_label_agreement": float(np.mean(lab_profile == lab_torch))}
    return out


def server_stats(client: Any) -> dict[str, dict[str, Any]]:
    """Triton's cumulative inference statistics per model."""
    out = {}
    for m in client.get_inference_statistics(as_json=True).get("model_stats", []):
        inf = m.get("inference_stats", {})
        out[m["name"]] = {
            "inference_count": int(m.get("inference_count", 0)),
            "execution_count": int(m.get("execution_count", 0)),
            **{f"{k}_ns": int(inf.get(k, {}).get("ns", 0)) for k in
               ("success", "queue", "compute_input", "compute_infer", "compute_output")},
            "batch": {int(b["batch_size"]): int(b.get("compute_infer", {}).get("count", 0))
                      for b in m.get("batch_stats", [])}}
    return out


def stats_delta(before: dict, after: dict, n_slices: int) -> dict[str, Any]:
    """What the statistics grew by over a measurement, per slice."""
    out = {}
    for name, a in after.items():
        b = before.get(name, {"batch": {}})
        entry: dict[str, Any] = {
            "executions": a["execution_count"] - b.get("execution_count", 0),
            "inferences": a["inference_count"] - b.get("inference_count", 0)}
        for k in SERVER_MS:
            ns = k.replace("_ms_per_slice", "_ns")
            entry[k] = (a[ns] - b.get(ns, 0)) / 1e6 / max(1, n_slices)
        hist = {bs: c - b["batch"].get(bs, 0) for bs, c in sorted(a["batch"].items())}
        entry["executions_by_batch_size"] = {bs: c for bs, c in hist.items() if c > 0}
        out[name] = entry
    return out


def run_triton(url: str, payloads: list[np.ndarray], concurrency: int) -> dict[str, Any]:
    """Every request to the ``aspects`` ensemble over gRPC, ``concurrency`` in flight."""
    import tritonclient.grpc as grpcclient

    clients = [grpcclient.InferenceServerClient(url) for _ in range(concurrency)]
    lock, todo, lat, errors = threading.Lock(), iter(payloads), [], []

    def worker(client: Any) -> None:
        while True:
            with lock:
                x = next(todo, None)
            if x is None:
                return
            r0 = time.perf_counter()
            try:
                labels = harness.infer(client, "aspects", {"SLICES": x}, ["LABELS", "CONFIDENCE"])
                assert labels["LABELS"].shape == (x.shape[0], *x.shape[2:])
            except Exception as exc:  # reported, not hidden
                with lock:
                    errors.append(str(exc)[:300])
                return
            with lock:
                lat.append(time.perf_counter() - r0)

    before = server_stats(clients[0])
    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = server_stats(clients[0])
    for c in clients:
        c.close()
    if errors:
        raise RuntimeError(f"Triton requests failed: {errors[:3]}")
    n = sum(p.shape[0] for p in payloads)
    return {"concurrency": concurrency, "slices": n, "wall_s": wall, "slices_per_s": n / wall,
            "latency_median_s": statistics.median(lat), "server": stats_delta(before, after, n)}


def server_memory(pid: int) -> dict[str, Any]:
    """VmRSS/VmHWM/... of tritonserver and every process of its group (the python stubs)."""
    procs = []
    for p in sorted(harness.group_pids(pid) | {pid}):
        try:
            status = Path(f"/proc/{p}/status").read_text().splitlines()
            name = Path(f"/proc/{p}/comm").read_text().strip()
        except OSError:
            continue
        fields = {k: int(rest.split()[0]) for k, _, rest in (s.partition(":") for s in status)
                  if k in MEMORY}
        model = [Path(a).parts[-3] for a in Path(f"/proc/{p}/cmdline").read_text(
            errors="replace").split("\0") if a.endswith("/model.py")] or [None]  # a stub's
        procs.append({"pid": p, "name": name, "model": model[0],
                      **{f"{k}_MiB": v / 1024 for k, v in fields.items()}})
    return {"processes": procs,
            "sum_MiB": {k: sum(pr.get(f"{k}_MiB", 0.0) for pr in procs) for k in MEMORY}}


def clean_median(rounds: list[dict[str, Any]]) -> tuple[float | None, int]:
    """Median slices/s over the measurements with other tenants < 20 %, and their count."""
    clean = [r["slices_per_s"] for r in rounds if share(r) < 0.2]
    return (statistics.median(clean) if clean else None), len(clean)


def level(rs: list[dict[str, Any]], ort: list[dict[str, Any]], ort_med: float, ort_eff: float,
          ort_clean: float | None) -> dict[str, Any]:
    """One Triton concurrency level against the in-process baseline."""
    med, eff = median_of(rs, "slices_per_s"), median_of(rs, "slices_per_own_cpu_s")
    clean, n_clean = clean_median(rs)
    paired = [t["slices_per_s"] / o["slices_per_s"] for t, o in zip(rs, ort, strict=True)]
    return {
        "slices_per_s": med, "per_round": [r["slices_per_s"] for r in rs],
        "latency_median_s": median_of(rs, "latency_median_s"),
        "ratio_vs_inprocess": med / ort_med, "clean_median_slices_per_s": clean,
        "clean_rounds": n_clean, "clean_ratio": clean / ort_clean if clean and ort_clean else None,
        "slices_per_own_cpu_s": eff, "cpu_efficiency_ratio": eff / ort_eff,
        "paired_ratio_per_round": paired, "paired_ratio_median": statistics.median(paired),
        "unet_batches": rs[-1]["server"].get("unet", {}).get("executions_by_batch_size"),
        "server_ms_per_slice": {m: {k: median_of(rs, "server", m, k) for k in SERVER_MS}
                                for m in STAGES if all(m in r["server"] for r in rs)}}


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    rounds = raw["rounds"]
    ort, tr = rounds["ort_inprocess"], rounds["torch_vs_ort"]
    ort_med, ort_eff = median_of(ort, "slices_per_s"), median_of(ort, "slices_per_own_cpu_s")
    ort_clean = clean_median(ort)[0]
    # "ort_inprocess_*" (report.py's keys): the in-process baseline, on "inprocess_profile"
    s: dict[str, Any] = {
        "inprocess_profile": raw["cpu_profile"]["name"], "ort_inprocess_slices_per_s": ort_med,
        "ort_inprocess_stage_ms_per_slice": {
            k: 1e3 * median_of(ort, "stage_s_per_slice", k) for k in STAGES},
        "triton": {c: level(rounds[f"triton_c{c}"], ort, ort_med, ort_eff, ort_clean)
                   for c in raw["levels"]},
        "ort_inprocess_slices_per_own_cpu_s": ort_eff, "ort_inprocess_clean_median": ort_clean,
        "torch_eager_per_slice_slices_per_s": median_of(tr, "torch_slices_per_s"),
        "ort_per_slice_batch1_slices_per_s": median_of(tr, "ort_b1_slices_per_s"),
        "ort_b1_over_torch_paired_median": statistics.median(
            r["ort_b1_slices_per_s"] / r["torch_slices_per_s"] for r in tr),
        "foreign_cpu_share_median": statistics.median(
            share(r) for v in rounds.values() for r in v),
        "torch_vs_ort_label_agreement": tr[-1]["label_agreement"],
        "torch_labels_nonbackground_fraction": tr[-1]["torch_nonbackground"]}
    if all("profile_b1_slices_per_s" in r for r in tr):
        s["profile_per_slice_batch1_slices_per_s"] = median_of(tr, "profile_b1_slices_per_s")
        s["profile_b1_over_torch_paired_median"] = statistics.median(
            r["profile_b1_slices_per_s"] / r["torch_slices_per_s"] for r in tr)
        s["profile_vs_torch_label_agreement"] = tr[-1]["profile_vs_torch_label_agreement"]
    return s


def _per_round(rs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['slices_per_s']:.3f} ({100 * share(r):.0f}%)" for r in rs)


def _clean(value: float | None, n: int) -> str:
    return f"{value:.3f} ({n})" if value else "— (0)"


def _throughput_rows(res: dict[str, Any]) -> tuple[list, list, list]:
    """Rows of the throughput, load-robust and server-time tables."""
    s, rounds, batch = res["summary"], res["rounds"], res["config"]["batch"]
    ort = rounds["ort_inprocess"]
    base = f"in-process, served profile (`{res['cpu_profile']['name']}`)"
    throughput = [[f"{base} (baseline)", "1 (single stream)",
                   f"{s['ort_inprocess_slices_per_s']:.3f}", _per_round(ort),
                   f"{median_of(ort, 'latency_median_s'):.3f} s", "1.00×", "1.00×",
                   f"{batch} (every run)"]]
    robust = [[base, 1, _clean(s["ort_inprocess_clean_median"], sum(share(r) < 0.2 for r in ort)),
               "1.00×", f"{s['ort_inprocess_slices_per_own_cpu_s']:.3f}", "1.00×"]]
    server = []
    for c, t in s["triton"].items():
        ok = "✓" if t["paired_ratio_median"] >= 0.9 else "✗"
        paired = ", ".join(f"{v:.2f}" for v in t["paired_ratio_per_round"])
        hist = t["unet_batches"]
        throughput.append([
            "Triton `aspects` ensemble, gRPC", c, f"{t['slices_per_s']:.3f}",
            _per_round(rounds[f"triton_c{c}"]), f"{t['latency_median_s']:.3f} s",
            f"{t['ratio_vs_inprocess']:.2f}×", f"**{t['paired_ratio_median']:.2f}×** {ok} "
            f"({paired})", "None" if hist is None else
            "{" + ", ".join(f"{k}: {v}" for k, v in hist.items()) + "}"])
        robust.append(["Triton", c, _clean(t["clean_median_slices_per_s"], t["clean_rounds"]),
                       f"{t['clean_ratio']:.2f}×" if t["clean_ratio"] else "—",
                       f"{t['slices_per_own_cpu_s']:.3f}", f"{t['cpu_efficiency_ratio']:.2f}×"])
        server += [[c, step, *(f"{v[k]:.1f}" for k in SERVER_MS)]
                   for step, v in t["server_ms_per_slice"].items()]
    return throughput, robust, server


def _other_rows(res: dict[str, Any]) -> tuple[list, list, list]:
    """Rows of the session settings, torch vs graphs and server memory tables."""
    s, prof, m = res["summary"], res["cpu_profile"]["name"], res["machine"]
    threads = [[step, v["backend"], f"{v['runtime']} {v['precision']} "
                f"{v.get('openvino_performance_hint') or ''}",
                f"{v['instance_count']} × {v['instance_kind']}", v["intra_op_num_threads"],
                v["inter_op_num_threads"], f"preferred {v['preferred_batch_size']}, delay "
                f"{v['max_queue_delay_microseconds']} µs"]
               for step, v in res["thread_settings"].items()]
    torch_rows = [[f"torch eager FP32 ({m['versions']['torch_threads']} threads)",
                   f"{s['torch_eager_per_slice_slices_per_s']:.2f}", "1.00×"]] + [
        [f"{what}, three graphs", f"{s[f'{k}_per_slice_batch1_slices_per_s']:.2f}",
         f"{s[f'{k}_b1_over_torch_paired_median']:.2f}×"] for k, what in (
            ("ort", "ONNX Runtime FP32"), ("profile", f"served profile `{prof}`"))
        if f"{k}_per_slice_batch1_slices_per_s" in s]
    mem, keys = res["server_memory"], ("VmRSS", "VmHWM", "RssAnon", "RssShmem")
    memory = [[f"{p['name']} {p.get('model') or ''}", p["pid"],
               *(f"{p.get(f'{k}_MiB', 0):.0f}" for k in keys)] for p in mem["processes"]]
    tot = mem["sum_MiB"]
    memory.append(["**sum**", "", f"**{tot['VmRSS']:.0f}**", *(f"{tot[k]:.0f}" for k in keys[1:])])
    return threads, torch_rows, memory


def _torch_text(res: dict[str, Any]) -> str:
    """Per-round torch vs graphs figures and the label agreement."""
    s, prof = res["summary"], res["cpu_profile"]["name"]
    has_profile = "profile_per_slice_batch1_slices_per_s" in s
    rounds = ", ".join(
        f"torch {r['torch_slices_per_s']:.2f} / ORT FP32 {r['ort_b1_slices_per_s']:.2f}"
        + (f" / `{prof}` {r['profile_b1_slices_per_s']:.2f}" if has_profile else "")
        + f" ({100 * share(r):.0f}% other tenants)" for r in res["rounds"]["torch_vs_ort"])
    return (f"Per round: {rounds}. Label agreement with torch: ONNX Runtime FP32 "
            f"{s['torch_vs_ort_label_agreement']:.5f} of pixels" + (
                f", `{prof}` {s['profile_vs_torch_label_agreement']:.5f}" if has_profile else "")
            + f"; non-background fraction {s['torch_labels_nonbackground_fraction']:.4f} "
            "(last round).")


def _intro(res: dict[str, Any]) -> list[str]:
    cfg, prof = res["config"], res["cpu_profile"]
    return [
        *harness.md_header("Triton CPU runtime benchmark (issue 4)", "triton_cpu.py",
                           res["machine"], "Triton CPU runtime (issue 4)"),
        f"**Network: {res['checkpoint']}**; provenance {res['provenance']}. **CPU profile: "
        f"`--cpu-runtime {prof['requested']}` → `{prof['name']}`** (gate: "
        f"{prof['numeric_gate']}); preprocess and postprocess on ONNX Runtime FP32.", "",
        f"Workload: {cfg['slices_source']}. Requests of {cfg['batch']} "
        f"stacks, {cfg['requests_per_level']} per measurement; {cfg['rounds']} interleaved "
        "rounds, order rotating; each measurement after a quiet window (other tenants < 15 %, "
        "≤ 20 s wait), repeated once above 25 % (the cleaner kept); medians reported.", ""]


def render_markdown(res: dict[str, Any]) -> list[str]:
    s = res["summary"]
    throughput, robust, server = _throughput_rows(res)
    threads, torch_rows, memory = _other_rows(res)
    lines = [
        *_intro(res), "## Throughput: Triton (CPU, python backend) vs the same sessions in-process",
        "", *md_table(["runtime", "concurrency", "slices/s (median)", "per round (other tenants' "
                       "share of the CPU)", "median latency / request", "median ÷ baseline median",
                       "per-round paired ratio (median)",
                       "unet executions by batch size (last round)"], throughput), "",
        "Goal: Triton ≥ 0.9× the in-process throughput (the baseline: the sessions the "
        "server's stubs build, `build_session`, in this process). The paired ratio divides each "
        "round's Triton figure by the same round's baseline, cancelling most drift; 'other "
        "tenants' = the machine's busy CPU time (/proc/stat) minus ours, as a share of cores × "
        f"wall time (median over all measurements: {100 * s['foreign_cpu_share_median']:.0f}%).",
        "", "Load-robust views: medians over the measurements with other tenants < 20 %, and "
        "slices per CPU-second of our own processes (this one + tritonserver's group):", "",
        *md_table(["runtime", "concurrency", "clean median slices/s (n)", "ratio (clean)",
                   "slices per own CPU-s", "ratio (CPU cost)"], robust), "",
        "In-process stage times (ms per slice, median): " + ", ".join(
            f"{k} {v:.1f}" for k, v in s["ort_inprocess_stage_ms_per_slice"].items()) + ".", "",
        "Server-side time per slice (ms, median over rounds; Triton statistics; compute_infer "
        "of a python-backend step = the stub's `execute`: the session + tensor handling):", "",
        *md_table(["concurrency", "step", "queue", "compute_input", "compute_infer",
                   "compute_output"], server), "",
        "### Session settings (the server's sessions; the baseline builds the same)", "",
        *md_table(["step", "backend", "runtime", "instances", "intra-op / OpenVINO threads",
                   "inter-op threads", "dynamic batching"], threads), "",
        "The baseline is single-stream: the unet already uses every core (threads 0 = "
        f"{res['machine']['cores']} here); more in-process streams would only oversubscribe "
        "them.", "",
        "## Torch eager (seed's per-slice loop) vs the exported graphs, same slices, same run", "",
        *md_table(["runtime", "slices/s (median)", "× torch (paired per round, median)"],
                  torch_rows, "lrr"), "", _torch_text(res), "",
        "## Server resident memory (after the run)", "",
        "Summed over tritonserver's process group (the server + one python-backend stub per "
        "model instance); RssShmem (the backend's shared memory) counts in every process.", "",
        *md_table(["process", "pid", "VmRSS MiB", "VmHWM MiB", "RssAnon MiB", "RssShmem MiB"],
                  memory), "", "## ONNX files", "",
        *md_table(["file", "bytes", "MiB"], [[n, b, f"{b / 2**20:.2f}"]
                                             for n, b in res["onnx_bytes"].items()]), "",
        "## GPU (TensorRT FP16)", "", "Not measured here (no GPU): `benchmarks/gpu_check.py` "
        "measures it on a GPU host (`results/gpu_check.md`)."]
    return lines + (["", "## Analysis", "", res["analysis"]] if res.get("analysis") else [])


def machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    return harness.machine_info({
        "numpy": np.__version__, "onnxruntime (client/baseline)": onnxruntime.__version__,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), **harness
        .package_versions(("openvino", "segmentation-models-pytorch", "tritonclient", "onnx")),
        **harness.server_env_versions(),
        "openvino (server env)": harness.venv_versions(names=("openvino",)).get("openvino")})


def measure_rounds(args: Any, levels: list[int], work: Path, repo: Path, onnx_dir: Path,
                   started: float) -> dict[str, Any]:
    """The in-process sessions, then Triton: every job in interleaved rounds."""
    from aspects_devkit.stack import LocalStack
    from perf_analyzer.run import served_profile

    from aspects_export.checkpoints import DEMO_SPEC, load_model

    model = load_model(DEMO_SPEC)[0]  # the exported weights, eval mode, in torch
    slices, settings = harness.phantom_stacks(), server_thread_settings(repo)
    profile = served_profile(repo, args.cpu_runtime)
    sessions = step_sessions(onnx_dir, settings)  # the served profile, in-process
    ort_fp32 = sessions if profile["name"] == "onnxruntime" else \
        step_sessions(onnx_dir, settings, unet_profile="onnxruntime")
    described = {k: {n: v.description for n, v in ses.items()} for k, ses in
                 (("served_profile", sessions), ("onnxruntime_fp32", ort_fp32))}
    other, n = None if ort_fp32 is sessions else sessions, slices.shape[0]
    payloads = [np.ascontiguousarray(slices[[(i * args.batch + j) % n for j in range(args.batch)]])
                for i in range(args.requests)]
    torch_slices = slices[: args.torch_slices]
    ort_pipeline(sessions, payloads[0])  # warm-up of the in-process side
    torch_vs_ort(model, ort_fp32, other, torch_slices[:1])
    with LocalStack(work, repository=repo) as stack:
        url, pid = stack.grpc_url, stack.triton.pid
        harness.log(f"tritonserver ready in {stack.triton.startup_seconds:.1f} s, pid {pid}")
        run_triton(url, payloads[:1], 1)  # warm-up: one request alone, then a burst
        run_triton(url, payloads[: max(levels)], max(levels))
        jobs = {"ort_inprocess": lambda: run_ort(sessions, payloads),
                **{f"triton_c{c}": lambda c=c: run_triton(url, payloads, c) for c in levels},
                "torch_vs_ort": lambda: torch_vs_ort(model, ort_fp32, other, torch_slices)}
        rounds = harness.run_rounds(
            jobs, args.rounds, harness.CpuMeter(triton=pid), quiet=args.quiet,
            retries=args.retries, retry_above=args.retry_above, first_round=1,
            late_after_s=60 * args.max_minutes - (time.perf_counter() - started),
            say=lambda res: f"{res['slices_per_s']:.3f} slices/s")
        for res in (x for rs in rounds.values() for x in rs):
            res["slices_per_own_cpu_s"] = res["slices"] / max(1e-9, res["cpu"]["own_cpu_s"])
        return {"cpu_profile": profile, "inprocess_sessions": described,
                "thread_settings": settings, "server_memory": server_memory(pid),
                "server_log_tail": stack.triton.log_tail(15), "rounds": rounds}


def measure(args: Any, levels: list[int]) -> dict[str, Any]:
    from aspects_devkit.stack import cpu_repository, export_onnx_dir

    from aspects_export.checkpoints import DEMO_CHECKPOINT_NOTE, DEMO_SPEC

    started, machine_ = time.perf_counter(), machine()
    work = Path(tempfile.mkdtemp(prefix="aspects-bench-triton-"))
    try:
        harness.log(f"exporting the {DEMO_SPEC} checkpoint to {work}; {DEMO_CHECKPOINT_NOTE}")
        t0 = time.perf_counter()
        onnx_dir, _ = export_onnx_dir(work / "onnx", checkpoint=DEMO_SPEC)
        repo = cpu_repository(onnx_dir, work / "model_repository", cpu_runtime=args.cpu_runtime)
        export_times = {"export_and_repository_s": time.perf_counter() - t0}
        provenance = harness.provenance(harness.network_of(DEMO_SPEC, onnx_dir))
        onnx_bytes = {p.name: p.stat().st_size for p in sorted(onnx_dir.glob("*.onnx"))}
        m = measure_rounds(args, levels, work, repo, onnx_dir, started)
    finally:
        if args.keep:
            harness.log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "triton_cpu (issue 4)", "provenance": provenance,
        "checkpoint": f"{DEMO_SPEC} — {DEMO_CHECKPOINT_NOTE}", "cpu_profile": m["cpu_profile"],
        "inprocess_sessions": m["inprocess_sessions"], "machine": machine_,
        "config": {"batch": args.batch, "requests_per_level": args.requests,
                   "rounds": args.rounds, "levels": levels, "torch_slices": args.torch_slices,
                   "slices_source": f"the client's 2.5D stacks of make_phantom(seed="
                   f"{harness.PHANTOM_SEED}) (load_volume + prepare + context_stacks: uint8 "
                   "[20,3,512,512]); requests cycle through them"},
        "export_times_s": export_times, "onnx_bytes": onnx_bytes,
        **{k: m[k] for k in ("thread_settings", "server_memory", "server_log_tail")},
        "gpu_tensorrt_fp16": "not measured here (no GPU): `benchmarks/gpu_check.py` measures it "
        "on a GPU host (results/gpu_check.md)", "levels": levels, "rounds": m["rounds"]}
    result["summary"] = summarise(result)
    result["total_seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    args = harness.cli(__doc__, harness.RESULTS / "triton_cpu.json", OPTIONS).parse_args(argv)
    return harness.finish(args, lambda: measure(args, harness.int_list(args.levels)),
                          render_markdown)


if __name__ == "__main__":
    sys.exit(main())
