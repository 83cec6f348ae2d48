"""What every benchmark script shares: the command line (options as data), machine and package
info, provenance, timing, the CPU meter (other tenants' share, quiet windows), interleaved
rounds, the phantom workload, the seed's way of preparing slices (the baseline), and JSON +
Markdown output (``md_table``: every table of every result file).

A script is run as ``.venv/bin/python benchmarks/NAME.py``, which puts ``benchmarks/`` on
``sys.path``, so ``import harness`` works; ``perf_analyzer/*.py`` add it themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata as md
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SERVER_VENV = ROOT / ".venv-server"
PHANTOM_SEED = 3
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
CLK_TCK = os.sysconf("SC_CLK_TCK")
Option = tuple[Any, ...]  # (flag, default[, help]): the type from the default, False a switch


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cli(doc: str, out: Path | None = None, options: Iterable[Option] = (),
        report: bool = True) -> argparse.ArgumentParser:
    """The parser every script starts from: its docstring, ``-o/--out/--output`` (dest
    ``out``), ``--report-only`` (re-render the Markdown from the JSON; no measurement) and
    ``options``, rows of (flag, default[, help]): typed by the default, ``False``: a switch."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if out is not None:
        p.add_argument("-o", "--out", "--output", dest="out", type=Path, default=out,
                       help=f"result JSON (default {out.relative_to(ROOT)})")
    if out is not None and report:
        p.add_argument("--report-only", action="store_true",
                       help="re-render the Markdown (and plot) from --out's JSON; no run")
    for flag, default, *text in options:
        kind = ({"action": "store_true"} if default is False
                else {"type": type(default), "default": default})
        p.add_argument(flag, help=text[0] if text else None, **kind)
    return p


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def machine_info(versions: dict[str, Any] | None = None) -> dict[str, Any]:
    """CPU, cores, memory, platform, load average, versions (python + ``versions``), date."""
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "memory_GiB": round(mem_kb / 1024**2, 1),
        "platform": platform.platform(), "loadavg_at_start": list(os.getloadavg()),
        "versions": {"python": platform.python_version(), **(versions or {})},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of distributions in this environment ("missing" if absent)."""
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


def venv_versions(venv: Path = SERVER_VENV, names: Sequence[str] = (
        "nvidia-pytriton", "tritonclient", "onnxruntime", "numpy")) -> dict[str, str | None]:
    """Versions of distributions in another virtual environment (the server's)."""
    code = ("import importlib.metadata as m, json, sys\nout = {}\nfor d in sys.argv[1:]:\n"
            "    try: out[d] = m.version(d)\n    except Exception: out[d] = None\n"
            "print(json.dumps(out))")
    try:
        run = subprocess.run([str(venv / "bin" / "python"), "-c", code, *names],
                             capture_output=True, text=True, timeout=60, check=True)
        return json.loads(run.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}


def server_env_versions(venv: Path = SERVER_VENV) -> dict[str, str]:
    """What the local Triton's own environment runs, as the result files name it."""
    v = venv_versions(venv)
    if not v:
        return {"server env": f"unreadable: {venv}"}
    return {
        "nvidia-pytriton (server env)": v["nvidia-pytriton"],
        "tritonserver": f"2.51 (bundled in nvidia-pytriton {v['nvidia-pytriton']}, NGC 24.10)",
        "onnxruntime (server env, python-backend stubs)": v["onnxruntime"],
        "numpy (server env)": v["numpy"],
    }


def git_commit(root: Path = ROOT) -> str:
    """HEAD's hash, with ``-dirty`` when tracked files differ from it ("unknown" outside git)."""
    try:
        head, dirty = (subprocess.run(["git", "-C", str(root), *cmd], capture_output=True,
                                      text=True, check=True).stdout.strip()
                       for cmd in (["rev-parse", "HEAD"],
                                   ["status", "--porcelain", "--untracked-files=no"]))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def sha256_of(path: Path) -> str:
    from aspects_synth.atlas import sha256_file

    return sha256_file(path)


def network_of(checkpoint: str, onnx_dir: Path | None = None) -> dict[str, Any]:
    """What identifies the network a result measured: the checkpoint spec, the sha256 of its
    weights (``demo``: the committed file; ``untrained``: seeded, no file) and of the
    ``unet.onnx`` measured (None where the network ran in PyTorch)."""
    from aspects_export.checkpoints import DEMO_SPEC, UNTRAINED_SPEC, demo_weights_path

    weights = None if checkpoint == UNTRAINED_SPEC else (
        demo_weights_path() if checkpoint == DEMO_SPEC else Path(checkpoint))
    return {"checkpoint": checkpoint,
            "weights_sha256": sha256_of(weights) if weights is not None else None,
            "unet_onnx_sha256": sha256_of(onnx_dir / "unet.onnx") if onnx_dir else None}


def provenance(network: dict[str, Any] | None) -> dict[str, Any]:
    """The ``provenance`` of every result file: the commit measured, the contract version and
    the network (``network_of``; None for a figure of no network, e.g. the client's
    preparation).  ``report.py`` marks a result whose contract or network is not today's."""
    from aspects_client import contract

    return {"commit": git_commit(), "contract_version": contract.CONTRACT_VERSION,
            "network": network}


def current_identity() -> dict[str, Any]:
    """Today's contract version and demo weights: what a result must match to be current."""
    from aspects_client import contract

    return {"contract_version": contract.CONTRACT_VERSION,
            "weights_sha256": network_of("demo")["weights_sha256"]}


def stale_reason(result: dict[str, Any], today: dict[str, Any] | None = None) -> str | None:
    """Why a result's figures are not of today's network and contract (None: current)."""
    today = today or current_identity()
    prov = result.get("provenance")
    if not isinstance(prov, dict):
        return "it records no provenance (commit, contract, network)"
    if prov.get("contract_version") != today["contract_version"]:
        return (f"measured under contract {prov.get('contract_version')}, today's is "
                f"{today['contract_version']}")
    network = prov.get("network")
    if network is not None and network.get("weights_sha256") != today["weights_sha256"]:
        sha = network.get("weights_sha256") or "none"
        return (f"measured on another network ({network.get('checkpoint')}, weights "
                f"{sha[:8]}…; today's demo weights are {today['weights_sha256'][:8]}…)")
    return None


class Laps(dict):
    """Seconds per named step: ``with laps("decode"): ...`` adds the block's time to it."""

    @contextlib.contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self[key] = self.get(key, 0.0) + time.perf_counter() - t


def seconds(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def median_of(rows: Iterable[Any], *path: Any) -> float:
    """The median of ``row[path[0]][path[1]]...`` over ``rows``."""

    def dig(row: Any) -> Any:
        for key in path:
            row = row[key]
        return row

    return statistics.median(map(dig, rows))


def fmt(value: float | None, spec: str = ".3f", none: str = "–") -> str:
    """``value`` formatted by ``spec``; ``none`` for None, NaN or infinity."""
    return none if value is None or not math.isfinite(value) else format(value, spec)


def proc_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


def group_pids(pgid: int | None) -> set[int]:
    """The processes of a process group (a local server and its children)."""
    if pgid is None:
        return set()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(stat[2]) == pgid:
                found.add(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds of this process (``client``), of each named process group (the local
    servers) and of everything else on the machine (other tenants: /proc/stat busy time
    minus ours), so that a measurement disturbed by other tenants can be told apart."""

    def __init__(self, **groups: int | None) -> None:
        self.groups = groups

    def snap(self) -> dict[str, float]:
        vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = vals[:8]
        return {"t": time.perf_counter(), "busy": user + nice + system + irq + softirq,
                "steal": steal, "client": proc_ticks(os.getpid()),
                **{k: sum(map(proc_ticks, group_pids(p))) for k, p in self.groups.items()}}

    def delta(self, a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        wall, cores = b["t"] - a["t"], os.cpu_count() or 1
        own = {k: (b[k] - a[k]) / CLK_TCK for k in ("client", *self.groups)}
        foreign = max(0.0, (b["busy"] - a["busy"]) / CLK_TCK - sum(own.values()))
        return {**{f"{k}_cpu_s": v for k, v in own.items()}, "own_cpu_s": sum(own.values()),
                "foreign_cpu_s": foreign, "steal_s": (b["steal"] - a["steal"]) / CLK_TCK,
                "foreign_share_of_machine": foreign / (wall * cores) if wall > 0 else 0.0}

    def measure(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``fn()``'s result with the CPU accounting of its run under ``"cpu"``."""
        a = self.snap()
        result = fn()
        result["cpu"] = self.delta(a, self.snap())
        return result

    def wait_quiet(self, threshold: float, max_wait_s: float, window_s: float = 1.5) -> float:
        """Wait (at most ``max_wait_s``) for a window in which other tenants use less than
        ``threshold`` of the machine; returns the seconds waited."""
        began = time.perf_counter()
        while time.perf_counter() - began < max_wait_s:
            a = self.snap()
            time.sleep(window_s)
            if self.delta(a, self.snap())["foreign_share_of_machine"] < threshold:
                break
        return time.perf_counter() - began


def run_rounds(jobs: dict[str, Callable[[], dict[str, Any]]], rounds: int, meter: CpuMeter, *,
               quiet: float = 0.15, max_wait_s: float = 20.0, retries: int | None = None,
               retry_above: float = 1.0, late_after_s: float | None = None,
               after_round: Callable[[int], Any] | None = None, budget_s: float | None = None,
               min_rounds: int = 2, first_round: int = 0,
               say: Callable[[dict[str, Any]], str] = lambda _: "") -> dict[str, list[dict]]:
    """Interleaved rounds: every job once a round, the order rotating from round to round (so
    slow drifts of the machine hit every job alike), each after a quiet window (``quiet``
    share of other tenants, waiting at most ``max_wait_s``) and measured by ``meter``; a
    measurement disturbed above ``retry_above`` is repeated up to ``retries`` times, the
    cleanest kept (with the ``attempts`` listed).  ``after_round(r)`` runs after each round;
    past ``budget_s`` no round starts that would end after it (once ``min_rounds`` are done)."""
    began, names = time.perf_counter(), list(jobs)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        round_began, k = time.perf_counter(), r % len(names)
        for name in [*names[k:], *names[:k]]:
            attempts = []
            for _ in range(1 + (retries or 0)):
                late = late_after_s is not None and time.perf_counter() - began > late_after_s
                waited = 0.0 if late else meter.wait_quiet(quiet, max_wait_s)
                res = meter.measure(jobs[name])
                res["waited_for_quiet_s"] = waited
                attempts.append(res)
                log(f"round {r + 1}/{rounds} {name}: {say(res)} "
                    f"[other tenants {100 * share(res):.0f}%]")
                if share(res) < retry_above or late:
                    break
            best = min(attempts, key=share)
            if retries is not None:
                best["attempts"] = [{"slices_per_s": a.get("slices_per_s"), "cpu": a["cpu"]}
                                    for a in attempts]
            best["round"] = r + first_round
            out[name].append(best)
        if after_round is not None:
            after_round(r)
        now = time.perf_counter()
        if budget_s is not None and r + 1 >= min_rounds and \
                now - began + now - round_began > budget_s:
            log(f"stopping after {r + 1} rounds: another would pass the budget")
            break
    return out


def share(row: dict[str, Any]) -> float:
    """Other tenants' share of the machine during a measurement."""
    return row["cpu"]["foreign_share_of_machine"]


def phantom_stacks(seed: int = PHANTOM_SEED) -> np.ndarray:
    """The 2.5D stacks uint8 [20, 3, 512, 512] of ``make_phantom(seed)``'s slices, windowed
    and oriented by the client (``load_volume`` + ``prepare``): what the client sends."""
    from aspects_client import contract
    from aspects_client.display_stack import prepare
    from aspects_client.server_reference import context_stacks
    from aspects_client.volume_io import load_volume
    from aspects_synth import make_phantom

    slices = prepare(load_volume(make_phantom(seed=seed).image, name=f"phantom seed {seed}")).slices
    if slices.dtype != np.uint8 or slices.shape[1:] != (512, 512):
        raise SystemExit(f"error: unexpected phantom slices {slices.dtype} {slices.shape}")
    stacks = context_stacks(slices)
    assert stacks.shape[1] == contract.NETWORK_CHANNELS, stacks.shape
    return stacks


def infer(client: Any, model: str, inputs: dict[str, np.ndarray],
          outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """One gRPC request to ``model`` of a Triton (``tritonclient.grpc`` client)."""
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


def seed_fdata(path: Path | str) -> np.ndarray:
    """The seed's read: ``nib.load(path).get_fdata()`` (float64)."""
    import nibabel as nib

    return nib.load(str(path)).get_fdata()


def seed_input(s: np.ndarray) -> np.ndarray:
    """One slice of the ``np.rot90``-ed volume the seed's way: ``s / s.max() * 255`` → uint8 →
    PIL ``.convert('RGB')`` (→ 512², bilinear, if not) → ImageNet normalisation → [3, H, W]."""
    from PIL import Image

    peak = s.max()
    u8 = (s / peak * 255).astype(np.uint8) if peak > 0 else np.zeros(s.shape, np.uint8)
    img = Image.fromarray(u8).convert("RGB")
    if img.size != (512, 512):
        img = img.resize((512, 512), Image.BILINEAR)
    x = (np.asarray(img, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def torch_labels(model: Any, x: Any, min_area: bool = False) -> np.ndarray:
    """The seed's head of the network, in torch: softmax, max probability ≥ the contract's
    threshold else background (and, with ``min_area``, the contract's per-class minimum
    area); ``x`` [N, 3, H, W] → uint8 labels [N, H, W]."""
    import torch

    from aspects_client import contract

    with torch.no_grad():
        maxp, arg = torch.softmax(model(x), dim=1).max(dim=1)
        labels = torch.where(maxp >= contract.THRESHOLD_PROB, arg, torch.zeros_like(arg))
        if min_area:
            small = torch.bincount(labels.flatten(), minlength=contract.NUM_CLASSES)
            small = small < contract.MIN_AREA_PIXELS
            small[contract.BACKGROUND_INDEX] = False
            labels = torch.where(small[labels], torch.zeros_like(labels), labels)
    return labels.to(torch.uint8).numpy()


def md_row(cells: Iterable[Any]) -> str:
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """A Markdown pipe table as lines; ``align``: one letter a column, ``l`` or ``r``."""
    sep = "|" + "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(header), "l"))
    return [md_row(header), sep, *map(md_row, rows)]


def md_header(title: str, script: str, m: dict[str, Any], section: str) -> list[str]:
    """The head of a result document: title, script, date, machine, versions, method."""
    load = tuple(round(x, 2) for x in m.get("loadavg_at_start") or ())
    memory = f", {m['memory_GiB']} GiB" if "memory_GiB" in m else ""
    return [f"# {title}", "", f"Generated by `benchmarks/{script}` on {m['date']}. Machine: "
            f"**{m['cpu']}, {m['cores']} cores**{memory} ({m['platform']}); load average at "
            f"start {load}. Method: `benchmarks/README.md`, section \"{section}\".", "",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", ""]


def finish(args: argparse.Namespace, measure: Callable[[], dict[str, Any]],
           render: Callable[[dict[str, Any]], list[str]], *, indent: int = 2,
           default: Any = str, derive: Callable[[dict[str, Any]], Any] | None = None,
           plot: Callable[[dict[str, Any], Path], Any] | None = None) -> int:
    """The end of every scenario script: ``measure()`` (or, with ``--report-only``, read the
    JSON at ``--out``), ``derive`` the summary, then write the JSON, the plot and the
    Markdown beside it."""
    fresh = not args.report_only
    result = measure() if fresh else json.loads(args.out.read_text())
    if derive is not None:
        derive(result)
    if fresh or derive is not None:
        write_json(args.out, result, indent, default)
    if plot is not None:
        plot(result, args.out.with_suffix(".png"))
    write_markdown(args.out.with_suffix(".md"), render(result), echo=False)
    log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


def write_json(path: Path, data: Any, indent: int = 2, default: Any = str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent, default=default) + "\n", encoding="utf-8")


def write_markdown(path: Path, lines: Iterable[str], echo: bool = True) -> None:
    text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    if echo:
        print(text)
