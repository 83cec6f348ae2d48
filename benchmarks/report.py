"""The figures of ``benchmarks/README.md``, generated from the result files.

Every table of latest figures in the README sits between ``<!-- table:NAME -->`` and
``<!-- /table:NAME -->``; this script rewrites those blocks from ``results/*.json`` (and the
perf_analyzer CSVs), so no figure is copied by hand.  ``--check`` only compares (exit 1 when
the README is stale; the static tests run the same comparison).

    .venv/bin/python benchmarks/report.py            # rewrite the README's tables
    .venv/bin/python benchmarks/report.py --check    # is the README up to date?
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
from harness import fmt, md_table

README = harness.ROOT / "benchmarks" / "README.md"
BLOCK = re.compile(r"(<!-- table:(\w+) -->\n).*?(<!-- /table:\2 -->)", re.S)


def _load(results: Path, name: str) -> dict[str, Any]:
    return json.loads((results / f"{name}.json").read_text())


def _machine(m: dict[str, Any]) -> str:
    return f"{m['date'][:10]}, {m['cpu']}, {m['cores']} cores"


def _tenants(rows: list[dict[str, Any]]) -> str:
    return f"other tenants ≤ {max(100 * harness.share(r) for r in rows):.1f} % in every measurement"


def client_prep(results: Path) -> list[str]:
    r = _load(results, "client_prep")
    t, mem = r["timings"], r["memory"]

    def ms(key: str) -> str:
        return f"{t[key]['median_s'] * 1e3:.0f}"

    rows = [["ours: gzip decode", ms("ours_decode")],
            ["ours: validate + window + reorient + slice", ms("ours_prep_rest")]]
    if "ours_stacks" in t:
        rows.append(["ours: 2.5D stacks", ms("ours_stacks")])
    rows += [["**ours: preparation total**", f"**{ms('ours_prep_total')}**"],
             ["ours: contours + JSON (true label map)", ms("ours_contours")],
             ["baseline: `nib.load` + `get_fdata`", ms("baseline_load_fdata")],
             ["baseline: rot90 + per-slice PIL RGB + ImageNet", ms("baseline_slices")],
             ["**baseline total**", f"**{ms('baseline_total')}**"],
             ["**speed-up, preparation (goal ≥ 3×)**", f"**{r['ratios']['prep_median']:.2f}×**"],
             ["**peak memory, ours (goal ≤ 3× the decoded volume)**",
              f"**{mem['ours_ratio']:.2f}×** ({mem['ours_from_bytes_ratio']:.2f}× from bytes)"],
             ["peak memory, baseline", f"{mem['baseline_ratio']:.2f}×"]]
    return [f"Latest figures (`results/client_prep.md`, {_machine(r['machine'])}; medians of "
            f"{r['repeats']} interleaved repeats; inflate {r['inflate']}):", "",
            *md_table(["", "ms"], rows, "lr")]


def triton_cpu(results: Path) -> list[str]:
    r = _load(results, "triton_cpu")
    s = r["summary"]
    rows = [[f"in-process `{s.get('inprocess_profile', 'onnxruntime')}`, batch "
             f"{r['config']['batch']} (baseline)",
             f"{s['ort_inprocess_slices_per_s']:.2f}", "1.00×"]]
    rows += [[f"Triton, concurrency {c}", f"{t['slices_per_s']:.2f}",
              f"{t['ratio_vs_inprocess']:.2f}× / **{t['paired_ratio_median']:.2f}×**"]
             for c, t in s["triton"].items()]
    rows.append(["torch eager per slice vs ORT per slice",
                 f"{s['torch_eager_per_slice_slices_per_s']:.2f} vs "
                 f"{s['ort_per_slice_batch1_slices_per_s']:.2f}",
                 f"ORT {s['ort_b1_over_torch_paired_median']:.2f}× faster"])
    measured = [x for rs in r["rounds"].values() for x in rs]
    return [f"Latest figures (`results/triton_cpu.md`, {_machine(r['machine'])}; "
            f"{r['config']['rounds']} interleaved rounds, {_tenants(measured)}):", "",
            *md_table(["", "slices/s (median)", "vs in-process (median ÷ median / paired per "
                       "round)"], rows, "lrr")]


def perf_analyzer(results: Path) -> list[str]:
    from perf_analyzer import summarize

    m = summarize.load(results, "")
    if m is None:
        return ["No perf_analyzer results (`results/perf_runs.json`)."]
    mc, v = m["machine_client"], m.get("server_venv_versions") or {}
    return [f"Latest figures ({m['started'][:10]}, {mc['cpu_model']}, {mc['cores']} cores, "
            f"tritonserver {m['server']['version']} from nvidia-pytriton "
            f"{v.get('nvidia-pytriton')}, perf_analyzer {m['perf_analyzer_version']}, unet "
            f"profile `{(m.get('cpu_profile') or {}).get('name', 'onnxruntime')}` (openvino "
            f"{v.get('openvino')}, onnxruntime {v.get('onnxruntime')} in the python-backend "
            "stubs); per-request latency, a request carries `batch` slices; full table with "
            "p50/p99, queue and compute per step in `results/perf_summary.md`, plot in "
            "`results/perf_throughput_latency.png`):", "",
            *summarize.compact_table({"": m})]


def end_to_end(results: Path) -> list[str]:
    r = _load(results, "end_to_end")
    s, ratio = r["summary"], r["summary"]["ratio"]
    rows = []
    for side in ("ours", "baseline"):
        for c, e in sorted(s[side].items(), key=lambda kv: int(kv[0])):
            out = f"{100 * e['outside_inference_share']:.1f} %"
            if side == "ours" and c == "1":
                out = f"**{out}** {'✓' if e['outside_inference_share'] <= 0.10 else '✗'}"
            what = "concurrent volume" if side == "ours" and c == "1" else "concurrent"
            rows.append([f"{side}, {c} {what}", f"{e['volumes_per_min_median']:.2f}",
                         f"{e['e2e_median_s']:.1f} s", out])
    b, one, goal = ratio["best"], ratio["concurrency_1"], ratio["goal"]
    rows += [[f"**ratio, best of each (ours c={b['ours_concurrency']} / baseline "
              f"c={b['baseline_concurrency']})**",
              f"**{b['ratio']:.2f}×** {'✓' if b['ratio'] >= goal else '✗'} (goal ≥ {goal:g}×)",
              "", ""],
             ["**ratio, concurrency 1**",
              f"**{one['ratio']:.2f}×** {'✓' if one['ratio'] >= goal else '✗'}", "", ""]]
    measured = [x for side in ("ours", "baseline") for rs in r["measurements"][side].values()
                for x in rs]
    return [f"Latest figures (`results/end_to_end.md`, {_machine(r['machine'])}, "
            f"{r['machine']['memory_GiB']} GiB; {r['rounds_run']} interleaved rounds, "
            f"{_tenants(measured)}):", "",
            *md_table(["", "volumes/min", "end-to-end latency (median)", "outside inference"],
                      rows, "lrrr")]


def accuracy(results: Path) -> list[str]:
    r = _load(results, "accuracy")
    ablation = _load(results, "accuracy_no_context") if (
        results / "accuracy_no_context.json").is_file() else {"goals": []}
    without = {g["goal"]: g["value"] for g in ablation["goals"]}
    rows = [[g["goal"].replace("|", "\\|"), g["target"], f"**{fmt(g['value'])}**",
             {True: "met", False: "missed", None: "not run"}[g["met"]],
             fmt(without.get(g["goal"]))] for g in r["goals"]]
    if r.get("real"):
        rows.append(["reference check: the registration vs the T1 head's exact labels", "",
                     fmt(r["real"]["t1_head"]["registration_vs_exact"]["mean_region_side"]),
                     "", ""])
    ck = r["checkpoint"]
    return [f"Latest figures ([`results/accuracy.md`](results/accuracy.md), `{ck['spec']}` "
            f"weights sha256 `{(ck['sha256'] or '')[:8]}…`, {r['date'][:10]}; "
            f"{r['arguments']['phantoms']} domain-randomised and {r['arguments']['b1000']} "
            "b1000 phantoms):", "",
            *md_table(["goal", "target", "value", "", "slice in all 3 channels (`--no-context`)"],
                      rows, "lrrlr")]


def input_size(results: Path) -> list[str]:
    r = _load(results, "input_size")
    rows = []
    for n, d in r["label_roundtrip_dice"].items():
        low = sorted(d["regions"].items(), key=lambda kv: kv[1])[:2]
        rows.append([f"{n}²", f"{d['mean']:.3f}", ", ".join(f"{k} {v:.3f}" for k, v in low),
                     f"{r['forward_ratio_vs_512'][n]:.2f}×", f"{r['train_ratio_vs_512'][n]:.2f}×"])
    return [f"From `results/input_size.json` (PyTorch CPU, {r['threads']} thread):", "",
            *md_table(["network input", "ceiling: mean Dice", "lowest regions",
                       "UNet forward vs 512²", "training step vs 512²"], rows, "lrlrr")]


def cpu_runtime(results: Path) -> list[str]:
    r = _load(results, "cpu_runtime")
    bs, gate = [str(b) for b in r["batches"]], r["gate"]
    rows = [[f"`{n}`", *(f"{v[b]['slices_per_s']:.1f} ({v[b]['ratio_paired']:.2f}×)" for b in bs),
             f"{100 * gate[n]['label_disagreement']:.3f} %" if n in gate else "(reference)"]
            for n, v in r["summary"].items()]
    measured = [x for rs in r["rounds"].values() for x in rs]
    return [f"Latest figures (`results/cpu_runtime.md`, {_machine(r['machine'])}, bf16: "
            f"{r['bf16_cpu']}; {len(measured) // len(r['rounds'])} interleaved rounds, "
            f"{_tenants(measured)}; slices/s, paired ratio vs ONNX Runtime FP32):", "",
            *md_table(["unet runtime", *(f"batch {b}" for b in bs), "labels ≠ ORT FP32"], rows,
                      "l" + "r" * (len(bs) + 1))]


TABLES: dict[str, Callable[[Path], list[str]]] = {
    f.__name__: f for f in (client_prep, triton_cpu, perf_analyzer, end_to_end, accuracy,
                            input_size, cpu_runtime)}
# the result files each table shows figures of (results/NAME.json)
SOURCES: dict[str, tuple[str, ...]] = {
    "client_prep": ("client_prep",), "triton_cpu": ("triton_cpu",),
    "perf_analyzer": ("perf_runs",), "end_to_end": ("end_to_end",),
    "accuracy": ("accuracy", "accuracy_no_context"), "input_size": ("input_size",),
    "cpu_runtime": ("cpu_runtime",)}
STALE_MARK = "**STALE**"


def stale_reasons(table: str, results: Path = harness.RESULTS,
                  today: dict[str, Any] | None = None) -> list[str]:
    """Why the figures of ``table`` are not of today's network and contract (empty: current)."""
    today = today or harness.current_identity()
    reasons = []
    for name in SOURCES[table]:
        path = results / f"{name}.json"
        if path.is_file():
            reason = harness.stale_reason(json.loads(path.read_text()), today)
            if reason:
                reasons.append(f"`results/{name}.json` {reason}")
    return reasons


def render(text: str, results: Path = harness.RESULTS) -> str:
    """``text`` with every marked table block regenerated from ``results``; a table whose
    result was measured on another network or contract opens with the stale mark."""
    today = harness.current_identity()

    def block(m: re.Match[str]) -> str:
        caption, *table = TABLES[m.group(2)](results)
        reasons = stale_reasons(m.group(2), results, today)
        if reasons:
            caption = (f"{STALE_MARK} (not today's network or contract: {'; '.join(reasons)}; "
                       "every figure of this section is of that older measurement until the "
                       f"benchmark is re-run). {caption}")
        return "\n".join([m.group(1) + textwrap.fill(caption, 95), *table, m.group(3)])

    return BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    p = harness.cli(__doc__)
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--results", type=Path, default=harness.RESULTS)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = p.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    missing = set(TABLES) - {m.group(2) for m in BLOCK.finditer(text)}
    new = render(text, args.results)
    if args.check:
        stale = new != text or missing
        print(f"{args.readme}: " + ("stale: run benchmarks/report.py" if new != text else
                                    f"no block for {sorted(missing)}" if missing else "current"))
        return 1 if stale else 0
    args.readme.write_text(new, encoding="utf-8")
    harness.log(f"wrote {args.readme}" + (f"; no block for {sorted(missing)}" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
