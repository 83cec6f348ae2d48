"""``aspects-train profile``: where a training step's CPU goes, and samples per CPU-second.

Each setup is timed in the same process (these machines are noisy, so only ratios against
the baseline measured in the same run mean anything): head generation, sample rendering
and the optimiser step (forward, loss, backward, AdamW) on one batch, in CPU-seconds of
this process (``time.process_time``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from aspects_synth.generator import Head, SampleOptions, training_samples

from .fit import auto_precision
from .module import SegmentationModule


@dataclass(frozen=True)
class Setup:
    """One way of training: data options, heads' reuse, precision, memory format."""

    name: str
    options: SampleOptions = field(default_factory=SampleOptions)
    per_head: int = 4
    bf16: bool = True
    channels_last: bool = False


BASELINE = Setup(
    "model card (256², 5 partial, 4 per head, bf16)",
    SampleOptions(centre_labels_only=False),
)
FAST = Setup(
    "campaign (176² crops, 3 partial, 8 per head, centre labels, bf16, channels_last)",
    SampleOptions(crop=176, partial=3, deep_fraction=0.4),
    per_head=8,
    channels_last=True,
)


def _cpu(fn) -> tuple[float, object]:
    began = time.process_time()
    out = fn()
    return time.process_time() - began, out


def _step(module: SegmentationModule, opt: torch.optim.Optimizer, x: torch.Tensor,
          y: torch.Tensor, bf16: bool) -> None:
    """One optimiser step: forward, loss, backward, AdamW."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = module.loss(module(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def time_setup(setup: Setup, batch: int, steps: int, seed: int = 5000) -> dict:
    """CPU-seconds per training sample of ``setup``: generator, step, total."""
    module = SegmentationModule(channels_last=setup.channels_last)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    rng = np.random.default_rng(seed)
    head_s, samples_s, step_s = [], [], []
    for k in range(steps):
        if k * batch % setup.per_head == 0 or not head_s:
            dt, head = _cpu(lambda k=k: Head(seed + k))
            head_s.append(dt)
        dt, (x, y) = _cpu(lambda h=head: training_samples(h, rng, batch, setup.options))
        samples_s.append(dt / batch)
        dt, _ = _cpu(lambda x=x, y=y: _step(module, opt, x, y, setup.bf16))
        step_s.append(dt / batch)
    # the first step pays one-off costs (allocations, atlas load): left out when there are more
    warm = slice(1, None) if steps > 1 else slice(None)
    per_sample = {
        "head": float(np.median(head_s[1:] or head_s)) / setup.per_head,
        "render": float(np.median(samples_s[warm])),
        "step": float(np.median(step_s[warm])),
    }
    total = sum(per_sample.values())
    return {"setup": asdict(setup), "cpu_s_per_sample": per_sample, "total_cpu_s": total,
            "samples_per_cpu_s": 1.0 / total}


def profile(batch: int = 8, steps: int = 4, threads: int = 1) -> dict:
    """Baseline and campaign setups timed in one run; ratio = campaign / baseline."""
    torch.set_num_threads(int(threads))
    if auto_precision() != "bf16-mixed":
        print("profile: no BF16 on this CPU; bf16 autocast figures are emulated", flush=True)
    rows = [time_setup(s, batch, steps) for s in (BASELINE, FAST)]
    ratio = rows[1]["samples_per_cpu_s"] / rows[0]["samples_per_cpu_s"]
    return {"threads": threads, "batch": batch, "steps": steps, "setups": rows,
            "speedup": ratio}


def main_profile(batch: int, steps: int, threads: int, out: str | None) -> int:
    result = profile(batch, steps, threads)
    for row in result["setups"]:
        p = row["cpu_s_per_sample"]
        print(f"{row['setup']['name']}: head {p['head']:.3f} + render {p['render']:.3f} + "
              f"step {p['step']:.3f} = {row['total_cpu_s']:.3f} CPU-s/sample, "
              f"{row['samples_per_cpu_s']:.2f} samples/CPU-s")
    print(f"campaign / baseline: {result['speedup']:.2f}x samples per CPU-second")
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    return 0
