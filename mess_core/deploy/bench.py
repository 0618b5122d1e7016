"""Latency measured side by side: the original model and deployed instances timed in one process, runs interleaved.

For every engine (torch eager, onnxruntime; CUDA eager when present) and batch size, each round times every variant
once over the same images, in turn, so drifts of the machine (clock, other load) fall on all of them alike. After
``warmup`` rounds, ``repeats`` rounds are kept. Reported per variant: mean milliseconds per image (what an average
image costs: the figure speedups are taken from), median and p90 of the per-batch times, and the exits taken.

Variants: ``original`` (the model as given), ``converted`` (the same network run stage by stage, no exit kept: the
cost of cutting it), every instance given, and for each input-dependent instance a ``no exit`` twin whose thresholds
no image meets (the full path with its heads and policy: its worst case).

:func:`stage_latency` gives the per-stage and per-head table (batch 1) that the search uses as its cost; the
``bench`` command can write it into an evaluation cache (``--into-cache``).
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..conversion.network import MultiExitNet
from ..conversion.profiling import _synchronize
from ..errors import MessError
from ..evaluate.instance import Instance, KeptExit
from .runtime import deploy

__all__ = ["bench", "stage_latency", "policy_overhead", "machine", "ENGINES"]

# what bench() can time on (CUDA is eager on another device, not an engine)
ENGINES = ("eager", "onnxruntime")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads"


def never_exits(instance: Instance) -> Instance:
    """The instance with thresholds no image meets: every image runs every kept head, the policy and the full path."""
    exits = tuple(KeptExit(e.exit, e.config, 1.0) for e in instance.exits)
    return dataclasses.replace(instance, exits=exits, policy=dataclasses.replace(instance.policy, th_pix=1.0))


class OriginalModel(nn.Module):
    """The original model returning its logits tensor (torchvision returns a dict): what savings are measured
    against."""

    def __init__(self, model: nn.Module, output_key: str | int | None):
        super().__init__()
        self.model, self.output_key = model, output_key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if self.output_key is None else out[self.output_key]


def _runners(
    net: MultiExitNet,
    model: nn.Module,
    instances: Mapping[str, Instance],
    engine: str,
    device: torch.device,
    size: tuple[int, int],
    workdir: Path,
) -> dict[str, Callable[[torch.Tensor], Any]]:
    variants: dict[str, Any] = {"original": OriginalModel(model, net.output_key), "converted": Instance("budgeted")}
    for name, inst in instances.items():
        variants[name] = inst
        if inst.mode == "input-dependent" and inst.exits:
            variants[f"{name} (no exit)"] = never_exits(inst)
    runners: dict[str, Callable[[torch.Tensor], Any]] = {}
    if engine == "onnxruntime":
        import onnxruntime as ort

        from .export import OnnxRunner, _export, export_onnx, session_options

        for i, (name, v) in enumerate(variants.items()):
            out = workdir / f"v{i}"
            if isinstance(v, nn.Module):
                out.mkdir(parents=True, exist_ok=True)
                _export(v.eval(), (torch.randn(2, 3, *size),), out / "model.onnx")
                sess = ort.InferenceSession(
                    str(out / "model.onnx"), session_options(), providers=["CPUExecutionProvider"]
                )
                name_in = sess.get_inputs()[0].name
                runners[name] = lambda x, s=sess, n=name_in: s.run(None, {n: x.numpy()})[0]
            else:
                runner = OnnxRunner(export_onnx(net, v, out, input_size=size))
                runners[name] = runner
        return runners
    for name, v in variants.items():
        module = v.eval() if isinstance(v, nn.Module) else deploy(net, v)
        runners[name] = module.to(device)
    return runners


def _exits_taken(result: Any) -> np.ndarray | None:
    if isinstance(result, tuple) and len(result) == 2 and torch.is_tensor(result[1]):
        return result[1].cpu().numpy()
    return None


def bench(
    net: MultiExitNet,
    model: nn.Module,
    instances: Mapping[str, Instance],
    images: torch.Tensor,
    *,
    batch_sizes: Sequence[int] = (1, 8),
    engines: Sequence[str] = ("eager", "onnxruntime"),
    repeats: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Time every variant (see the module docstring) on ``images`` (N, 3, H, W); one row per engine x batch size x
    variant with ``ms_per_image`` (mean), ``median_ms`` / ``p90_ms`` (per batch), ``speedup`` (original's mean over
    this one's) and ``exit_fractions``."""
    if unknown := [e for e in engines if e not in ENGINES]:
        raise MessError(f"bench: unknown engine(s) {', '.join(map(str, unknown))}; choose from {', '.join(ENGINES)}")
    device = torch.device(device)
    size = tuple(images.shape[-2:])
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for engine in engines:
            dev = device if engine == "eager" else torch.device("cpu")
            log(f"preparing {engine} ({dev})...")
            runners = _runners(net, model, instances, engine, dev, size, Path(tmp) / engine)
            for b in batch_sizes:
                batches = [images[i : i + b].to(dev) for i in range(0, len(images) - b + 1, b)]
                if not batches:
                    continue
                times: dict[str, list[float]] = {name: [] for name in runners}
                taken: dict[str, list[np.ndarray]] = {name: [] for name in runners}
                for rnd in range(warmup + repeats):
                    for name, run in runners.items():
                        for x in batches:
                            _synchronize()
                            t0 = time.perf_counter()
                            result = run(x)
                            _synchronize()
                            if rnd >= warmup:
                                times[name].append(time.perf_counter() - t0)
                                if rnd == warmup:
                                    ex = _exits_taken(result)
                                    if ex is not None:
                                        taken[name].append(ex)
                base = statistics.fmean(times["original"]) / b
                for name, ts in times.items():
                    per_image = statistics.fmean(ts) / b
                    ex = np.concatenate(taken[name]) if taken[name] else None
                    fractions = (
                        {int(k): float(v) for k, v in zip(*np.unique(ex, return_counts=True))}
                        if ex is not None
                        else None
                    )
                    if fractions:
                        fractions = {k: v / len(ex) for k, v in fractions.items()}
                    rows.append(
                        {
                            "engine": f"{engine} ({dev.type})",
                            "batch": b,
                            "variant": name,
                            "ms_per_image": 1e3 * per_image,
                            "median_ms": 1e3 * statistics.median(ts),
                            "p90_ms": 1e3 * float(np.percentile(ts, 90)),
                            "speedup": base / per_image,
                            "exit_fractions": fractions,
                            "runs": len(ts),
                        }
                    )
                log(f"  {engine} batch {b}: done")
    return pd.DataFrame(rows)


def stage_latency(
    net: MultiExitNet, size: tuple[int, int], *, repeats: int = 10, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, dict[int, dict[str, float]]]:
    """Median milliseconds of every stage and every attached head for one image: the search's latency cost."""
    from ..evaluate.cache_build import measure_latency

    configs = sorted({c for bank in net.heads.values() for c in bank.keys()})
    with torch.inference_mode():
        stage_ms, head_ms = measure_latency(net, configs, size, torch.device(device), repeats)
    table = {
        i: {c: float(head_ms[i - 1, j]) for j, c in enumerate(configs) if c in net.heads[str(i)]}
        for i in range(1, net.num_exits)
    }
    return stage_ms, table


def policy_overhead(
    net: MultiExitNet, instance: Instance, images: torch.Tensor, *, repeats: int = 20
) -> dict[str, float]:
    """Batch-1 milliseconds of the shallowest kept exit's path (stages up to it + its head) and of the exit rule on
    its output, timed interleaved on the same images."""
    first = instance.exits[0]
    head = net.head(first.exit, first.config)
    size = tuple(images.shape[-2:])
    path_t, policy_t = [], []
    with torch.inference_mode():
        for rnd in range(2 + repeats):
            for x in images.split(1):
                t0 = time.perf_counter()
                logits = head(net.walk_to(x, stop=first.exit).features, size)
                t1 = time.perf_counter()
                instance.policy.exits(logits, first.th_img if first.th_img is not None else 0.5)
                t2 = time.perf_counter()
                if rnd >= 2:
                    path_t.append(t1 - t0)
                    policy_t.append(t2 - t1)
    path, policy = 1e3 * statistics.fmean(path_t), 1e3 * statistics.fmean(policy_t)
    return {"exit": first.exit, "path_ms": path, "policy_ms": policy, "ratio": policy / path}
