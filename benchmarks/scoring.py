"""ASPECTS score accuracy (issue 14) on held-out synthetic lesion cases, through the real
Triton ensemble with the demo weights; the truth applies the client's rule to the EXACT masks,
each region x side of each case is one decision (method in benchmarks/README.md).

    .venv/bin/python benchmarks/scoring.py [--cases 40]    # -> results/scoring.{json,md}
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np

GOALS = {"sensitivity": 0.95, "specificity": 0.97, "exact": 0.85, "within_1": 0.98,
         "lesion_free_10": 0.98}
METHODS = ("adc", "dwi")
DWI_RATIOS = (1.3, 1.5, 1.8, 2.2)  # measured for the DWI-only rule (contract.DWI_LESION_RATIO)


def truth_score(case: Any) -> dict[str, Any]:
    """The rule applied to the case's exact classes, hemispheres and lesion mask."""
    from aspects_client.geometry import geometry_of, to_display
    from aspects_client.scoring.lesions import aspects_score, involvement

    g = geometry_of(case.dwi.affine, case.dwi.shape[:3])
    voxel_ml = g.voxel_volume_mm3 / 1000.0
    classes = np.asarray(to_display(case.classes, g), np.uint8)
    hemis = np.asarray(to_display(case.hemispheres, g), np.uint8)
    lesion = np.asarray(to_display(case.lesion, g), bool)
    return aspects_score(involvement(lesion, classes, hemis, voxel_ml))


def decisions(score: dict[str, Any]) -> dict[tuple[str, str], bool]:
    """(region, side) -> affected, for all 20 region x side pairs."""
    from aspects_client import contract

    out = {(k, h): False for k in contract.REGION_KEYS for h in contract.HEMISPHERES}
    for h, keys in score["affected_regions"].items():
        for k in keys:
            out[(k, h)] = True
    return out


def measure_cases(n: int, seed0: int) -> dict[str, Any]:
    from aspects_devkit.stack import LocalStack

    from aspects_client import AspectsClient, contract
    from aspects_synth.lesion_cases import render_lesion_case

    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(Path(tmp), checkpoint="demo") as stack,
        AspectsClient(stack.grpc_url, overlay=False) as client,
    ):
        for i in range(n):
            seed = seed0 + i
            t = time.perf_counter()
            case = render_lesion_case(seed, adc_grid="other" if i % 2 else "same")
            render_s = time.perf_counter() - t
            truth = truth_score(case)
            row: dict[str, Any] = {"seed": seed, "lesions": int(case.lesion_count),
                                   "adc_grid": "other" if i % 2 else "same",
                                   "render_s": round(render_s, 1), "truth": _short(truth)}
            t = time.perf_counter()
            result = client.segment(case.dwi, name=f"case{seed}", adc=case.adc)
            row["adc"] = {**_short(result.score), "seconds": round(time.perf_counter() - t, 1)}
            for ratio, score in dwi_scores(case, result).items():
                row[f"dwi_{ratio:g}"] = _short(score)
            row["dwi"] = row[f"dwi_{contract.DWI_LESION_RATIO:g}"]
            rows.append(row)
            harness.log(f"case {seed}: lesions {case.lesion_count}, truth "
                        f"{truth['score']} ({truth['affected_hemisphere']}), ADC "
                        f"{row['adc']['score']}, DWI {row['dwi']['score']}")
        network = harness.network_of("demo", Path(tmp) / "onnx")  # what the stack served
    return {"cases": rows, "provenance": harness.provenance(network)}


def dwi_scores(case: Any, result: Any) -> dict[float, dict[str, Any]]:
    """The DWI-only score for each ratio in DWI_RATIOS from the SAME segmentation (the
    served labels of ``result``; hemispheres and QC as the client computes them)."""
    from aspects_client.display_stack import prepare
    from aspects_client.geometry import to_display
    from aspects_client.hemisphere import estimate_plane, hemisphere_map
    from aspects_client.scoring.lesions import ScoringRule
    from aspects_client.scoring.score import score_volume
    from aspects_client.volume_io import load_volume

    volume = load_volume(case.dwi)
    prepared = prepare(volume)
    g = prepared.geometry
    labels = np.ascontiguousarray(to_display(np.asanyarray(result.label_image.dataobj), g))
    hemis = hemisphere_map(labels, g, estimate_plane(labels, g, prepared.slices))
    qc = result.document["qc"]
    return {r: score_volume(volume, prepared, labels, hemis, qc,
                            rule=ScoringRule(dwi_ratio=r)).section for r in DWI_RATIOS}


def _short(score: dict[str, Any]) -> dict[str, Any]:
    keys = ("score", "scores", "affected_hemisphere", "affected_regions", "uncertain")
    return {k: score[k] for k in keys}


def summarise(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """Region-level sensitivity/specificity (overall and per region), score agreement."""
    from aspects_client import contract

    tp = fn = tn = fp = 0
    per_region = {k: [0, 0, 0, 0] for k in contract.REGION_KEYS}  # tp, fn, tn, fp
    exact = within = free = free_ten = certain = certain_exact = wrong = wrong_flagged = 0
    for row in rows:
        truth, pred = decisions(row["truth"]), decisions(row[method])
        for (key, _side), want in truth.items():
            got = pred[(key, _side)]
            cell = (0 if got else 1) if want else (3 if got else 2)
            per_region[key][cell] += 1
        d = row[method]["score"] - row["truth"]["score"]
        exact += d == 0
        within += abs(d) <= 1
        flagged = bool(row[method]["uncertain"])
        certain += not flagged
        certain_exact += (not flagged) and d == 0
        wrong += d != 0
        wrong_flagged += d != 0 and flagged
        if row["truth"]["affected_hemisphere"] is None:
            free += 1
            free_ten += row[method]["score"] == 10
    for counts in per_region.values():
        tp, fn, tn, fp = tp + counts[0], fn + counts[1], tn + counts[2], fp + counts[3]
    n = len(rows)
    return {
        "cases": n, "lesion_free_cases": free,
        "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
        "exact": _ratio(exact, n), "within_1": _ratio(within, n),
        "lesion_free_10": _ratio(free_ten, free),
        "uncertain_flag": {"certain_cases": certain,
                           "certain_exact": _ratio(certain_exact, certain),
                           "wrong_scores": wrong, "wrong_flagged": wrong_flagged},
        "counts": {"tp": tp, "fn": fn, "tn": tn,
                                                              "fp": fp},
        "per_region": {k: {"sensitivity": _ratio(c[0], c[0] + c[1]),
                           "specificity": _ratio(c[2], c[2] + c[3]), "affected": c[0] + c[1]}
                       for k, c in per_region.items()},
    }


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def derive(result: dict[str, Any]) -> None:
    from aspects_client import contract

    used = f"dwi_{contract.DWI_LESION_RATIO:g}"  # the rule as the client applies it now
    if used in result["cases"][0]:
        for row in result["cases"]:
            row["dwi"] = row[used]
        result["dwi_ratio"] = contract.DWI_LESION_RATIO
    result["summary"] = {m: summarise(result["cases"], m) for m in METHODS}
    result["dwi_ratio_sweep"] = {
        f"{r:g}": {k: v for k, v in summarise(result["cases"], f"dwi_{r:g}").items()
                   if k != "per_region"}
        for r in DWI_RATIOS if f"dwi_{r:g}" in result["cases"][0]}
    result["goals"] = GOALS


def render(r: dict[str, Any]) -> list[str]:
    lines = harness.md_header("ASPECTS score accuracy on held-out synthetic lesion cases",
                              "scoring.py", r["machine"], "ASPECTS score")
    lines += ["Region level: each region x side of each case is one affected/not decision; the "
              "truth applies the same rule to the exact lesion mask and exact regions.", ""]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    rows = []
    for key, goal in GOALS.items():
        rows.append([key.replace("_", " "), f"≥ {100 * goal:.0f} %",
                     *(pct(r["summary"][m][key]) for m in METHODS)])
    lines += harness.md_table(["measure", "goal", "with ADC", "DWI only"], rows, "lrrr")
    s = r["summary"]["adc"]
    lines += ["", f"{s['cases']} cases, {s['lesion_free_cases']} lesion-free; region decisions "
              f"with ADC: {s['counts']}.", ""]
    for m, name in (("adc", "With ADC"), ("dwi", "DWI only")):
        u = r["summary"][m]["uncertain_flag"]
        lines.append(f"- {name}: {u['wrong_flagged']} of the {u['wrong_scores']} wrong scores "
                     f"carry the uncertain flag; the {u['certain_cases']} cases without it "
                     f"score exactly in {pct(u['certain_exact'])}.")
    lines += ["", "Per region (sensitivity / specificity):", ""]
    per = [[k, s_adc["affected"], f"{pct(s_adc['sensitivity'])} / {pct(s_adc['specificity'])}",
            f"{pct(s_dwi['sensitivity'])} / {pct(s_dwi['specificity'])}"]
           for k, s_adc, s_dwi in ((k, r["summary"]["adc"]["per_region"][k],
                                    r["summary"]["dwi"]["per_region"][k])
                                   for k in r["summary"]["adc"]["per_region"])]
    lines += harness.md_table(["region", "affected (truth)", "with ADC", "DWI only"], per, "lrrr")
    sweep = r.get("dwi_ratio_sweep", {})
    if sweep:
        lines += ["", "DWI-only rule: the ratio to the homologous region's median, measured on the "
                  "same segmentations (the contract's value is marked):", ""]
        rows = [[f"{ratio}{' (used)' if float(ratio) == r['dwi_ratio'] else ''}",
                 *(pct(s[k]) for k in GOALS)] for ratio, s in sweep.items()]
        lines += harness.md_table(["DWI ratio", *(k.replace("_", " ") for k in GOALS)], rows,
                                  "lrrrrr")
    return lines


def main(argv: list[str] | None = None) -> int:
    from aspects_synth.lesion_cases import SCORE_SEED_START

    args = harness.cli(__doc__, harness.RESULTS / "scoring.json",
                       [("--cases", 40), ("--seed", SCORE_SEED_START)]).parse_args(argv)

    def measure() -> dict[str, Any]:
        from aspects_client import contract

        return {"machine": harness.machine_info(), "dwi_ratio": contract.DWI_LESION_RATIO,
                **measure_cases(args.cases, args.seed)}

    return harness.finish(args, measure, render, derive=derive)


if __name__ == "__main__":
    sys.exit(main())
