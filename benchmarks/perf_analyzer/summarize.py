"""Summarise the perf_analyzer sweeps of ``run.py`` (issue 6): ``results/perf_[LABEL_]runs.json``
and the CSVs it names → ``results/perf_summary.md`` (slices/s, p50/p95/p99, server queue and
compute per model and per ensemble step; GPU rows "not measured here" unless a ``gpu`` run
exists) and ``results/perf_throughput_latency.png``.  Default labels: '' (``--local``) and
``gpu``.

    .venv/bin/python benchmarks/perf_analyzer/summarize.py [--results DIR] [--label L ...]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness
from harness import md_table

MODELS = ("aspects", "preprocess", "unet", "postprocess")
STEPS = ("preprocess", "unet", "postprocess")
GPU_CONCURRENCY = "1,2,4,8,16,32"
GPU_COMMAND = (".venv/bin/python benchmarks/perf_analyzer/run.py --url GPU_HOST:8001 "
               f"--metrics-url GPU_HOST:8002/metrics --label gpu --concurrency {GPU_CONCURRENCY}")
CSV_COLUMNS = {"slices_per_s": "Inferences/Second", "p50": "p50 latency", "p95": "p95 latency",
               "p99": "p99 latency", "avg": "Avg latency", "queue": "Server Queue",
               "compute_input": "Server Compute Input", "compute_infer": "Server Compute Infer",
               "compute_output": "Server Compute Output", "gpu_util": "Avg GPU Utilization"}


def _f(row: dict[str, str], key: str) -> float | None:
    try:
        return float((row.get(key) or "").strip())
    except ValueError:
        return None


def ms(us: float | None, digits: int = 1) -> str:
    return "–" if us is None else f"{us / 1000:.{digits}f}"


def load(results: Path, label: str) -> dict[str, Any] | None:
    """The manifest of a label, each level with its CSV row (``row``), or None."""
    path = results / (f"perf_{label}_runs.json" if label else "perf_runs.json")
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    for run in manifest["runs"]:
        rows = []
        if run.get("csv"):
            with (results / run["csv"]).open(newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if r.get("Concurrency")]
        by_conc = {int(float(r["Concurrency"])): r for r in rows}
        for level in run["levels"]:
            level["row"] = by_conc.get(level["concurrency"])
    return manifest


def level_figures(run: dict[str, Any], level: dict[str, Any]) -> dict[str, Any] | None:
    """Slices/s, latency percentiles and server times (µs per request) of one level."""
    row = level.get("row")
    if row is None:
        return None
    parsed = level.get("parsed") or {}
    fig: dict[str, Any] = {k: _f(row, col) for k, col in CSV_COLUMNS.items()}
    fig["requests"] = (parsed.get("client") or {}).get("request_count")
    composing = parsed.get("composing") or {}
    if run["model"] == "aspects" and composing:
        # perf_analyzer's CSV row for an ensemble carries the ensemble's own queue (~0) and
        # folds the steps' queueing into "Network+Server Send/Recv": sum the steps instead.
        fig["queue"] = sum(s.get("queue_us", 0.0) for s in composing.values())
    fig["steps"] = composing
    return fig


def counting_check(m: dict[str, Any]) -> list[list[Any]]:
    """Evidence that Inferences/Second counts batch elements (slices), per batched run."""
    rows = []
    for run in m["runs"]:
        first = min(lv["concurrency"] for lv in run["levels"])
        for level in run["levels"]:
            parsed, row = level.get("parsed") or {}, level.get("row")
            if row is None or not parsed or level["concurrency"] != first:
                continue
            client, server = parsed.get("client") or {}, parsed.get("server") or {}
            rate, reqs = _f(row, "Inferences/Second"), client.get("request_count")
            if not rate or not reqs:
                continue
            duration, window = reqs * run["batch"] / rate, level["interval_ms"] / 1000
            ratio = (server.get("inference_count", 0) / server["request_count"]
                     if server.get("request_count") else None)
            rows.append([run["model"], run["batch"], level["concurrency"], reqs, f"{rate:.3g}",
                         f"{duration:.1f} s = {duration / window:.2f} × window {window:g} s",
                         "–" if ratio is None else f"{ratio:.2f}"])
    return rows


def versions_line(m: dict[str, Any]) -> str:
    v, local = m.get("server_venv_versions") or {}, m.get("target") == "local"
    parts = [f"tritonserver {(m.get('server') or {}).get('version', '?')}" + (
        f" (bundled in nvidia-pytriton {v['nvidia-pytriton']}, NGC 24.10)"
        if local and v.get("nvidia-pytriton") else ""),
        f"perf_analyzer {m.get('perf_analyzer_version', '?')} "
        f"(tritonclient {v.get('tritonclient', '?')} wheel)"]
    if local:
        parts.append(f"onnxruntime {v.get('onnxruntime', '?')}, openvino {v.get('openvino')} "
                     f"in the python-backend stubs, numpy {v.get('numpy', '?')}")
    return "; ".join([*parts, f"Python {m.get('python', '?')}"])


def machine_line(m: dict[str, Any]) -> str:
    mc = m.get("machine_client") or {}
    load = ", ".join(f"{x:.2f}" for x in mc.get("loadavg_at_start") or [])
    return (f"{mc.get('cpu_model', '?')}, {mc.get('cores', '?')} cores, "
            f"{mc.get('memory_gib', '?')} GiB RAM ({mc.get('platform', '?')}); "
            f"load average at start {load}")


def section(m: dict[str, Any], title: str) -> list[str]:
    st, out = m["settings"], [f"## {title}", ""]
    out.append(f"- Measured: {m['started'].replace('T', ' ')} → {m['finished'].split('T')[1]} "
               "(UTC)")
    profile = m.get("cpu_profile") or {}
    if m.get("target") == "local":
        unet = (f"the unet on **`{profile['name']}`** (`--cpu-runtime {profile['requested']}`;"
                f" gate: {profile['numeric_gate']}), preprocess and postprocess on onnxruntime "
                "FP32" if profile else "each step on onnxruntime")
        out += [f"- Machine (client and server): {machine_line(m)}",
                "- Server: local tritonserver (`LocalTriton`), CPU repository from "
                f"`{(m.get('local_server') or {}).get('repository', '?')}`: each step a "
                f"python-backend model running its ONNX file on KIND_CPU, {unet}; dynamic "
                "batching as in the committed configs"]
    else:
        out.append(f"- Client machine: {machine_line(m)}; server: "
                   f"`{' '.join(m.get('argv') or [])}`")
    prov = m.get("provenance") or {}
    out.append(f"- Network: **{m.get('checkpoint') or prov.get('note')}**; provenance: "
               f"contract {prov.get('contract_version')}, {prov.get('network')}")
    metrics = (f"`--collect-metrics` against `{m['metrics_url']}`" if m.get("metrics_url")
               else f"no metrics ({m.get('metrics_note')})")
    first: dict[str, Any] = {}  # each model's run of its smallest batch
    for r in sorted(m["runs"], key=lambda r: r["batch"]):
        first.setdefault(r["model"], r)
    out += [
        f"- Software: {versions_line(m)}",
        f"- perf_analyzer: gRPC, sync, `--measurement-mode time_windows`, window chosen per "
        f"model/batch ≈ {st['requests_per_window']:g}× the probed request latency within "
        f"{st['min_interval_ms'] / 1000:g}–{st['max_interval_ms'] / 1000:g} s, "
        f"`--stability-percentage {st['stability']:g}` (doubled on one retry), "
        f"`--max-trials {st['max_trials']}`; {metrics}",
        "- Input data: " + "; ".join(f"`{k}`: {r['data']}" for k, r in first.items()),
        "",
        "Latency is per request (a request carries `batch` slices); server times are "
        "perf_analyzer's per-request averages; for `aspects` the queue is the sum of its "
        "steps' queues and compute the sum of their compute.  `load` is the 1-minute load "
        "average when the level started: with 2 cores, a value well above 2 means other "
        "work shared the machine during that level (this machine is shared; the sweep "
        "waits for the other benchmark scripts but not for tests).", "",
    ]
    rows, steps, unstable = [], [], []
    for run in m["runs"]:
        for level in run["levels"]:
            fig = level_figures(run, level)
            load = level.get("loadavg_at_start")
            tail = [f"{level['interval_ms'] / 1000:g}", f"{load[0]:.1f}" if load else "–"]
            head = [run["model"], run["batch"], level["concurrency"]]
            if fig is None:
                unstable.append(f"{run['model']} b{run['batch']} c{level['concurrency']} "
                                f"({level['status']}, {level['attempts']} attempts)")
                rows.append([*head, level["status"], *[""] * 7, *tail])
                continue
            rows.append([*head, f"**{fig['slices_per_s']:.3g}**", ms(fig["p50"], 0),
                         f"**{ms(fig['p95'], 0)}**", ms(fig["p99"], 0),
                         *(ms(fig[k]) for k in ("queue", "compute_input", "compute_infer",
                                                "compute_output")), *tail])
            for step in STEPS if run["model"] == "aspects" else ():
                s = fig["steps"].get(step)
                if s:
                    steps.append([run["batch"], level["concurrency"], step,
                                  f"{int(s.get('execution_count', 0))} / "
                                  f"{int(s.get('request_count', 0))}",
                                  *(ms(s.get(f"{k}_us")) for k in (
                                      "queue", "compute_input", "compute_infer",
                                      "compute_output"))])
    out += [*md_table(["model", "batch", "concurrency", "**slices/s**", "p50 ms", "**p95 ms**",
                       "p99 ms", "server queue ms", "compute input ms", "compute infer ms",
                       "compute output ms", "window s", "load"], rows, "l" + "r" * 12), ""]
    if steps:
        out += ['### Inside the ensemble: per step (perf_analyzer\'s "Composing models")', "",
                "Per request of the step, averaged over the measurement.  Executions < requests "
                "means the step's dynamic batcher merged requests.", "",
                *md_table(["batch", "concurrency", "step", "executions / requests", "queue ms",
                           "compute input ms", "compute infer ms", "compute output ms"],
                          steps, "rrlrrrrr"), ""]
    if unstable:
        out += ["Levels without a row: " + "; ".join(unstable) + ".", ""]
    return out


def compact_table(manifests: dict[str, dict[str, Any]]) -> list[str]:
    """The README's table of latest figures: slices/s and p95 per model, batch and level."""
    rows = []
    for label, m in manifests.items():
        mc = m.get("machine_client") or {}
        target = label or f"CPU, {mc.get('cpu_model', '?')} {mc.get('cores', '?')} cores"
        for run in m["runs"]:
            figs = [(lv, level_figures(run, lv)) for lv in run["levels"]]
            thr = [f"c{lv['concurrency']}: " + (f"{f['slices_per_s']:.3g}" if f else lv["status"])
                   for lv, f in figs]
            p95 = [f"c{lv['concurrency']}: " + (ms(f["p95"], 0) if f else "–") for lv, f in figs]
            rows.append([target, run["model"], run["batch"], " · ".join(thr), " · ".join(p95)])
    if "gpu" not in manifests:
        rows += [["GPU", mo, b, "not measured here (no GPU)", "–"] for mo in MODELS
                 for b in (1, 8)]
    return md_table(["target", "model", "batch", "slices/s at concurrency 1 / 2 / 4 ...",
                     "p95 ms at concurrency 1 / 2 / 4 ..."], rows, "llr")


def plot(manifests: dict[str, dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(12, 5.6))
    colors = {"aspects": "tab:red", "preprocess": "tab:green", "unet": "tab:blue",
              "postprocess": "tab:orange"}
    ticks: set[int] = set()
    for li, (label, m) in enumerate(manifests.items()):
        for run in m["runs"]:
            pts = [(lv["concurrency"], f) for lv in run["levels"]
                   if (f := level_figures(run, lv)) is not None]
            if not pts:
                continue
            xs, batched = [c for c, _ in pts], run["batch"] > 1
            ticks.update(xs)
            color = colors.get(run["model"], "gray")
            style = dict(color=color, marker="os^D"[li % 4], markersize=6,
                         markerfacecolor="white" if batched else color,
                         linestyle="--" if batched else "-",
                         label=f"{label or 'cpu'} {run['model']} b{run['batch']}")
            ax_t.plot(xs, [f["slices_per_s"] for _, f in pts], **style)
            ax_l.plot(xs, [f["p95"] / 1000 for _, f in pts], **style)
    for ax, ylabel in ((ax_t, "throughput (slices/s)"), (ax_l, "p95 latency per request (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(ticks))
        ax.set_xticklabels([str(t) for t in sorted(ticks)])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(  # label 2, 5, 20, 50, ... only
            lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_title("throughput (solid: batch 1, dashed: batch 8)")
    ax_l.set_title("p95 latency of a request (batch slices)")
    title = ", ".join(
        f"{lb or 'cpu'}: {(m.get('machine_client') or {}).get('cpu_model', '?')} "
        f"{(m.get('machine_client') or {}).get('cores', '?')} cores"
        + (f", {(m.get('checkpoint') or '?').split(':')[0]} weights, unet "
           f"{m['cpu_profile']['name']}" if m.get("cpu_profile") else "")
        if m.get("target") == "local" else f"{lb}: {m.get('server', {}).get('version', '')}"
        for lb, m in manifests.items())
    fig.suptitle(f"perf_analyzer, aspects ensemble and steps — {title}")
    fig.legend(*ax_t.get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(png, dpi=110)
    plt.close(fig)


def render_markdown(manifests: dict[str, dict[str, Any]], png: Path, generated: str) -> list[str]:
    lines = [
        "# perf_analyzer results (issue 6)", "",
        f"Generated by `benchmarks/perf_analyzer/summarize.py` on {generated} from the raw "
        "CSVs (`perf_[LABEL_]<model>_b<batch>.csv`, perf_analyzer `-f --verbose-csv`), the "
        "console logs (`.log`) and `perf_[LABEL_]runs.json` beside this file.  Reproduce: "
        'see `benchmarks/README.md`, section "perf_analyzer (issue 6)".', "",
        f"![throughput and p95 latency against concurrency]({png.name})", "",
        "**Slices/s = perf_analyzer's `Inferences/Second`**, which already counts batch "
        "elements: a request of `-b 8` is 8 inferences.  Checked on every run (last table): "
        "the client's request count × batch ÷ `Inferences/Second` gives the same multiple "
        "of the measurement window (≈ 3.6×: the 3 stable windows perf_analyzer merges, as "
        "it times them) for batch 1 and batch 8 — were requests counted, batch 8 would give "
        "8× that — and the server reports `batch` inferences per request.", "",
    ]
    for label, m in manifests.items():
        lines += section(m, "CPU, this machine (`run.py --local`)" if label == "" else
                         f"`{label}` (`run.py {' '.join(m.get('argv') or [])}`)")
    if "gpu" not in manifests:
        lines += [
            "## GPU (TensorRT FP16 unet, onnxruntime pre/post on KIND_GPU)", "",
            "**Not measured here (no GPU on this machine).**  On a GPU host serving the "
            "committed `model_repository/` (docker-compose or Kubernetes), from a checkout "
            "with `.venv` and `.venv-server` (scripts/setup_envs.sh):", "",
            "```", GPU_COMMAND, ".venv/bin/python benchmarks/perf_analyzer/summarize.py", "```",
            "", *md_table(["model", "batch", "concurrency", "slices/s", "p50 ms", "p95 ms",
                           "p99 ms"], [[mo, b, GPU_CONCURRENCY, "not measured here (no GPU)",
                                        "", "", ""] for mo in MODELS for b in (1, 8)], "lr"), ""]
    return [*lines, "## Check: Inferences/Second counts slices", "",
            *md_table(["model", "batch", "concurrency", "requests (client)", "Inferences/Second",
                       "requests × batch ÷ Inferences/Second", "server inferences per request"],
                      [r for m in manifests.values() for r in counting_check(m)], "lrrrrlr")]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=harness.RESULTS)
    p.add_argument("--label", action="append",
                   help="run labels to summarise (default: '' = the --local CPU run, and gpu)")
    p.add_argument("-o", "--out", "--output", dest="out", type=Path,
                   help="default RESULTS/perf_summary.md")
    p.add_argument("--png", type=Path, help="default RESULTS/perf_throughput_latency.png")
    p.add_argument("--no-plot", action="store_true", help="do not redraw the PNG")
    p.add_argument("--readme-table", action="store_true",
                   help="also print the README's compact table of latest figures")
    args = p.parse_args(argv)
    labels = args.label if args.label is not None else ["", "gpu"]
    manifests = {lb: m for lb in labels if (m := load(args.results, lb)) is not None}
    if not manifests:
        print(f"error: no perf_*runs.json for labels {labels} in {args.results}; "
              "run benchmarks/perf_analyzer/run.py first", file=sys.stderr)
        return 1
    out = args.out or args.results / "perf_summary.md"
    png = args.png or args.results / "perf_throughput_latency.png"
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    harness.write_markdown(out, render_markdown(manifests, png, generated), echo=False)
    if not args.no_plot:
        plot(manifests, png)
    if args.readme_table:
        print("\n".join(compact_table(manifests)))
    harness.log(f"wrote {out}" + ("" if args.no_plot else f" and {png}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
