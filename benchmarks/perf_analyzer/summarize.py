"""Summarise the perf_analyzer sweeps of ``run.py`` (issue 6).

Reads ``results/perf_[LABEL_]runs.json`` (settings, versions, machine, per-step server
statistics parsed from perf_analyzer's console) and the raw CSVs it names
(``results/perf_[LABEL_]<model>_b<batch>.csv``, perf_analyzer's own ``-f`` output, one row
per concurrency level), and writes

* ``results/perf_summary.md``: slices/s, p50/p95/p99 latency, server queue and compute
  (input / infer / output) time per model and per ensemble step, the machine, the software
  versions and the date, GPU rows "not measured here" unless a ``gpu`` run exists;
* ``results/perf_throughput_latency.png``: slices/s and p95 latency against concurrency,
  one line per model and batch size (matplotlib).

    .venv/bin/python benchmarks/perf_analyzer/summarize.py [--results DIR] [--label L ...]

By default the unlabelled run (``--local``, this machine's CPU) and a ``gpu`` run if present
are summarised; ``--label`` picks others (``oracle``, ``smoke``...).
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

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE.parent / "results"
MODELS = ("aspects", "preprocess", "unet", "postprocess")
STEPS = ("preprocess", "unet", "postprocess")
GPU_CONCURRENCY = "1,2,4,8,16,32"
GPU_COMMAND = (
    ".venv/bin/python benchmarks/perf_analyzer/run.py --url GPU_HOST:8001 "
    f"--metrics-url GPU_HOST:8002/metrics --label gpu --concurrency {GPU_CONCURRENCY}"
)


def manifest_path(results: Path, label: str) -> Path:
    return results / (f"perf_{label}_runs.json" if label else "perf_runs.json")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("Concurrency")]


def _f(row: dict[str, str], key: str) -> float | None:
    value = (row.get(key) or "").strip()
    try:
        return float(value)
    except ValueError:
        return None


def ms(us: float | None, digits: int = 1) -> str:
    return "–" if us is None else f"{us / 1000:.{digits}f}"


def load(results: Path, label: str) -> dict[str, Any] | None:
    path = manifest_path(results, label)
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    for run in manifest["runs"]:
        rows = read_csv(results / run["csv"]) if run.get("csv") else []
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
    fig: dict[str, Any] = {
        "slices_per_s": _f(row, "Inferences/Second"),
        "p50": _f(row, "p50 latency"),
        "p95": _f(row, "p95 latency"),
        "p99": _f(row, "p99 latency"),
        "avg": _f(row, "Avg latency"),
        "queue": _f(row, "Server Queue"),
        "compute_input": _f(row, "Server Compute Input"),
        "compute_infer": _f(row, "Server Compute Infer"),
        "compute_output": _f(row, "Server Compute Output"),
        "gpu_util": _f(row, "Avg GPU Utilization"),
        "requests": (parsed.get("client") or {}).get("request_count"),
    }
    composing = parsed.get("composing") or {}
    if run["model"] == "aspects" and composing:
        # perf_analyzer's CSV row for an ensemble carries the ensemble's own queue (~0) and
        # folds the steps' queueing into "Network+Server Send/Recv": sum the steps instead.
        fig["queue"] = sum(s.get("queue_us", 0.0) for s in composing.values())
    fig["steps"] = composing
    return fig


def load1(level: dict[str, Any]) -> str:
    load = level.get("loadavg_at_start")
    return f"{load[0]:.1f}" if load else "–"


def counting_check(manifest: dict[str, Any]) -> list[str]:
    """Evidence that Inferences/Second counts batch elements (slices), per batched run."""
    lines = []
    for run in manifest["runs"]:
        for level in run["levels"]:
            parsed, row = level.get("parsed") or {}, level.get("row")
            if (
                row is None
                or not parsed
                or level["concurrency"] != min(lv["concurrency"] for lv in run["levels"])
            ):
                continue
            client, server = parsed.get("client") or {}, parsed.get("server") or {}
            rate, reqs = _f(row, "Inferences/Second"), client.get("request_count")
            if not rate or not reqs:
                continue
            duration = reqs * run["batch"] / rate
            ratio = (
                server.get("inference_count", 0) / server["request_count"]
                if server.get("request_count")
                else None
            )
            lines.append(
                f"| {run['model']} | {run['batch']} | {level['concurrency']} | {reqs} | "
                f"{rate:.3g} | {duration:.1f} s = {duration / (level['interval_ms'] / 1000):.2f} × "
                f"window {level['interval_ms'] / 1000:g} s | "
                + (f"{ratio:.2f}" if ratio is not None else "–")
                + " |"
            )
    return lines


def versions_line(m: dict[str, Any]) -> str:
    v = m.get("server_venv_versions") or {}
    server = m.get("server") or {}
    parts = [
        f"tritonserver {server.get('version', '?')}"
        + (
            f" (bundled in nvidia-pytriton {v['nvidia-pytriton']}, NGC 24.10)"
            if m.get("target") == "local" and v.get("nvidia-pytriton")
            else ""
        )
    ]
    parts.append(
        f"perf_analyzer {m.get('perf_analyzer_version', '?')} "
        f"(tritonclient {v.get('tritonclient', '?')} wheel)"
    )
    if m.get("target") == "local":
        parts.append(
            f"onnxruntime {v.get('onnxruntime', '?')} in the python-backend stubs, "
            f"numpy {v.get('numpy', '?')}"
        )
    parts.append(f"Python {m.get('python', '?')}")
    return "; ".join(parts)


def machine_line(m: dict[str, Any]) -> str:
    mc = m.get("machine_client") or {}
    load = ", ".join(f"{x:.2f}" for x in mc.get("loadavg_at_start") or [])
    return (
        f"{mc.get('cpu_model', '?')}, {mc.get('cores', '?')} cores, "
        f"{mc.get('memory_gib', '?')} GiB RAM ({mc.get('platform', '?')}); "
        f"load average at start {load}"
    )


def section(m: dict[str, Any], title: str) -> list[str]:
    out = [f"## {title}", ""]
    when = m["started"].replace("T", " ")
    out.append(f"- Measured: {when} → {m['finished'].split('T')[1]} (UTC)")
    if m.get("target") == "local":
        out.append(f"- Machine (client and server): {machine_line(m)}")
        out.append(
            "- Server: local tritonserver (`LocalTriton`), CPU repository from "
            f"`{(m.get('local_server') or {}).get('repository', '?')}`: each step a "
            "python-backend model running its ONNX file with onnxruntime on KIND_CPU, "
            "dynamic batching as in the committed configs"
        )
    else:
        out.append(
            f"- Client machine: {machine_line(m)}; server: `{' '.join(m.get('argv') or [])}`"
        )
    if m.get("checkpoint"):
        out.append(
            f"- Checkpoint: **{m['checkpoint']}** — the compute is the real "
            "efficientnet-b3 Unet; the labels mean nothing"
        )
    out.append(f"- Software: {versions_line(m)}")
    st = m["settings"]
    out.append(
        f"- perf_analyzer: gRPC, sync, `--measurement-mode time_windows`, window chosen per "
        f"model/batch ≈ {st['requests_per_window']:g}× the probed request latency within "
        f"{st['min_interval_ms'] / 1000:g}–{st['max_interval_ms'] / 1000:g} s, "
        f"`--stability-percentage {st['stability']:g}` (doubled on one retry), "
        f"`--max-trials {st['max_trials']}`; "
        + (
            "`--collect-metrics` against " + f"`{m['metrics_url']}`"
            if m.get("metrics_url")
            else f"no metrics ({m.get('metrics_note')})"
        )
    )
    out.append(
        "- Input data: "
        + "; ".join(
            f"`{r['model']}`: {r['data']}"
            for r in m["runs"]
            if r["batch"] == min(x["batch"] for x in m["runs"] if x["model"] == r["model"])
        )
    )
    out.append("")
    out += [
        "Latency is per request (a request carries `batch` slices); server times are "
        "perf_analyzer's per-request averages; for `aspects` the queue is the sum of its "
        "steps' queues and compute the sum of their compute.  `load` is the 1-minute load "
        "average when the level started: with 2 cores, a value well above 2 means other "
        "work shared the machine during that level (this machine is shared; the sweep "
        "waits for the other benchmark scripts but not for tests).",
        "",
        "| model | batch | concurrency | **slices/s** | p50 ms | **p95 ms** | p99 ms | "
        "server queue ms | compute input ms | compute infer ms | compute output ms | window s "
        "| load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    unstable = []
    for run in m["runs"]:
        for level in run["levels"]:
            fig = level_figures(run, level)
            if fig is None:
                unstable.append((run, level))
                out.append(
                    f"| {run['model']} | {run['batch']} | {level['concurrency']} | "
                    f"{level['status']} | | | | | | | | "
                    f"{level['interval_ms'] / 1000:g} | {load1(level)} |"
                )
                continue
            out.append(
                f"| {run['model']} | {run['batch']} | {level['concurrency']} | "
                f"**{fig['slices_per_s']:.3g}** | {ms(fig['p50'], 0)} | **{ms(fig['p95'], 0)}** | "
                f"{ms(fig['p99'], 0)} | {ms(fig['queue'])} | {ms(fig['compute_input'])} | "
                f"{ms(fig['compute_infer'])} | {ms(fig['compute_output'])} | "
                f"{level['interval_ms'] / 1000:g} | {load1(level)} |"
            )
    out.append("")
    steps_rows = []
    for run in m["runs"]:
        if run["model"] != "aspects":
            continue
        for level in run["levels"]:
            fig = level_figures(run, level)
            for step in STEPS:
                s = (fig or {}).get("steps", {}).get(step)
                if not s:
                    continue
                steps_rows.append(
                    f"| {run['batch']} | {level['concurrency']} | {step} | "
                    f"{int(s.get('execution_count', 0))} / {int(s.get('request_count', 0))} | "
                    f"{ms(s.get('queue_us'))} | {ms(s.get('compute_input_us'))} | "
                    f"{ms(s.get('compute_infer_us'))} | {ms(s.get('compute_output_us'))} |"
                )
    if steps_rows:
        out += [
            '### Inside the ensemble: per step (perf_analyzer\'s "Composing models")',
            "",
            "Per request of the step, averaged over the measurement.  Executions < requests "
            "means the step's dynamic batcher merged requests.",
            "",
            "| batch | concurrency | step | executions / requests | queue ms | "
            "compute input ms | compute infer ms | compute output ms |",
            "|---:|---:|---|---:|---:|---:|---:|---:|",
            *steps_rows,
            "",
        ]
    if unstable:
        out.append(
            "Levels without a row: "
            + "; ".join(
                f"{r['model']} b{r['batch']} c{lv['concurrency']} ({lv['status']}, "
                f"{lv['attempts']} attempts)"
                for r, lv in unstable
            )
            + "."
        )
        out.append("")
    return out


def compact_table(manifests: dict[str, dict[str, Any]]) -> list[str]:
    """The README's table of latest figures: slices/s and p95 per model, batch and level."""
    out = [
        "| target | model | batch | slices/s at concurrency 1 / 2 / 4 ... | "
        "p95 ms at concurrency 1 / 2 / 4 ... |",
        "|---|---|---:|---|---|",
    ]
    for label, m in manifests.items():
        target = (
            "CPU, "
            + (m.get("machine_client") or {}).get("cpu_model", "?")
            + f" {(m.get('machine_client') or {}).get('cores', '?')} cores"
            if label == ""
            else label
        )
        for run in m["runs"]:
            thr, p95 = [], []
            for lv in run["levels"]:
                f = level_figures(run, lv)
                c = lv["concurrency"]
                thr.append(f"c{c}: {f['slices_per_s']:.3g}" if f else f"c{c}: {lv['status']}")
                p95.append(f"c{c}: {ms(f['p95'], 0)}" if f else f"c{c}: –")
            out.append(
                f"| {target} | {run['model']} | {run['batch']} | {' · '.join(thr)} | "
                f"{' · '.join(p95)} |"
            )
    if "gpu" not in manifests:
        out += [
            f"| GPU | {mo} | {b} | not measured here (no GPU) | – |"
            for mo in MODELS
            for b in (1, 8)
        ]
    return out


def plot(manifests: dict[str, dict[str, Any]], png: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return (
            "matplotlib is not installed (`.venv/bin/pip install matplotlib`); "
            "the plot was not drawn"
        )
    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(12, 5.6))
    colors = {
        "aspects": "tab:red",
        "preprocess": "tab:green",
        "unet": "tab:blue",
        "postprocess": "tab:orange",
    }
    markers = ["o", "s", "^", "D"]
    ticks: set[int] = set()
    for li, (label, m) in enumerate(manifests.items()):
        for run in m["runs"]:
            pts = [(lv["concurrency"], level_figures(run, lv)) for lv in run["levels"]]
            pts = [(c, f) for c, f in pts if f is not None]
            if not pts:
                continue
            xs = [c for c, _ in pts]
            ticks.update(xs)
            batched = run["batch"] > 1
            color = colors.get(run["model"], "gray")
            style = dict(
                color=color,
                marker=markers[li % 4],
                markersize=6,
                markerfacecolor="white" if batched else color,
                linestyle="--" if batched else "-",
                label=f"{label or 'cpu'} {run['model']} b{run['batch']}",
            )
            ax_t.plot(xs, [f["slices_per_s"] for _, f in pts], **style)
            ax_l.plot(xs, [f["p95"] / 1000 for _, f in pts], **style)
    for ax, ylabel in ((ax_t, "throughput (slices/s)"), (ax_l, "p95 latency per request (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(ticks))
        ax.set_xticklabels([str(t) for t in sorted(ticks)])
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_title("throughput (solid: batch 1, dashed: batch 8)")
    ax_l.set_title("p95 latency of a request (batch slices)")
    title = ", ".join(
        f"{lb or 'cpu'}: {(m.get('machine_client') or {}).get('cpu_model', '?')} "
        f"{(m.get('machine_client') or {}).get('cores', '?')} cores"
        if m.get("target") == "local"
        else f"{lb}: {m.get('server', {}).get('version', '')}"
        for lb, m in manifests.items()
    )
    fig.suptitle(f"perf_analyzer, aspects ensemble and steps — {title}")
    handles, labels = ax_t.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument(
        "--label",
        action="append",
        default=None,
        help="run labels to summarise (default: '' = the --local CPU run, and gpu)",
    )
    p.add_argument("--out", type=Path, default=None, help="default RESULTS/perf_summary.md")
    p.add_argument(
        "--png", type=Path, default=None, help="default RESULTS/perf_throughput_latency.png"
    )
    p.add_argument(
        "--readme-table",
        action="store_true",
        help="also print the README's compact table of latest figures",
    )
    args = p.parse_args(argv)
    labels = args.label if args.label is not None else ["", "gpu"]
    manifests = {lb: m for lb in labels if (m := load(args.results, lb)) is not None}
    if not manifests:
        print(
            f"error: no perf_*runs.json for labels {labels} in {args.results}; "
            "run benchmarks/perf_analyzer/run.py first",
            file=sys.stderr,
        )
        return 1
    out = args.out or args.results / "perf_summary.md"
    png = args.png or args.results / "perf_throughput_latency.png"

    lines = [
        "# perf_analyzer results (issue 6)",
        "",
        f"Generated by `benchmarks/perf_analyzer/summarize.py` on "
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from the raw "
        "CSVs (`perf_[LABEL_]<model>_b<batch>.csv`, perf_analyzer `-f --verbose-csv`), the "
        "console logs (`.log`) and `perf_[LABEL_]runs.json` beside this file.  Reproduce: "
        'see `benchmarks/README.md`, section "perf_analyzer (issue 6)".',
        "",
        f"![throughput and p95 latency against concurrency]({png.name})",
        "",
        "**Slices/s = perf_analyzer's `Inferences/Second`**, which already counts batch "
        "elements: a request of `-b 8` is 8 inferences.  Checked on every run (last table): "
        "the client's request count × batch ÷ `Inferences/Second` gives the same multiple "
        "of the measurement window (≈ 3.6×: the 3 stable windows perf_analyzer merges, as "
        "it times them) for batch 1 and batch 8 — were requests counted, batch 8 would give "
        "8× that — and the server reports `batch` inferences per request.",
        "",
    ]
    for label, m in manifests.items():
        title = (
            "CPU, this machine (`run.py --local`)"
            if label == ""
            else f"`{label}` (`run.py {' '.join(m.get('argv') or [])}`)"
        )
        lines += section(m, title)
    if "gpu" not in manifests:
        lines += [
            "## GPU (TensorRT FP16 unet, onnxruntime pre/post on KIND_GPU)",
            "",
            "**Not measured here (no GPU on this machine).**  On a GPU host serving the "
            "committed `model_repository/` (docker-compose or Kubernetes), from a checkout "
            "with `.venv` and `.venv-server` (scripts/setup_envs.sh):",
            "",
            "```",
            GPU_COMMAND,
            ".venv/bin/python benchmarks/perf_analyzer/summarize.py",
            "```",
            "",
            "| model | batch | concurrency | slices/s | p50 ms | p95 ms | p99 ms |",
            "|---|---:|---|---|---|---|---|",
            *[
                f"| {mo} | {b} | {GPU_CONCURRENCY} | not measured here (no GPU) | | | |"
                for mo in MODELS
                for b in (1, 8)
            ],
            "",
        ]
    lines += [
        "## Check: Inferences/Second counts slices",
        "",
        "| model | batch | concurrency | requests (client) | Inferences/Second | "
        "requests × batch ÷ Inferences/Second | server inferences per request |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for m in manifests.values():
        lines += counting_check(m)
    lines.append("")
    problem = plot(manifests, png)
    if problem:
        lines += [f"_Plot: {problem}._", ""]
        print(f"warning: {problem}", file=sys.stderr)
    out.write_text("\n".join(lines))
    if args.readme_table:
        print("\n".join(compact_table(manifests)))
    print(f"wrote {out}" + ("" if problem else f" and {png}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
