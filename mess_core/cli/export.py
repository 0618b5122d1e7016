"""``export``: a chosen instance of a study as per-stage ONNX files, checked against PyTorch before they are kept.

    python -m mess_core export STUDY (--instance FILE | --row ID [--mode MODE]) --onnx DIR [--size HxW] [--images N]

The instance comes from a JSON file (the app's Pareto page downloads one, ``search`` writes one) or from a row of the
study's results table. Every check that needs no export runs first (output folder, study, instance, heads the study
ships); the files are then written by :func:`mess_core.deploy.export.export_onnx` into a temporary folder beside
``DIR``, run with :class:`mess_core.deploy.export.OnnxRunner` on a sample batch and compared with the PyTorch deployed
instance (:func:`mess_core.deploy.runtime.deploy`), and only then renamed to ``DIR``: a failed or disagreeing export
leaves nothing.

No TorchScript: ``torch.jit`` is deprecated in the PyTorch this project runs, ``torch.jit.script`` cannot compile the
deployed modules (fx stages in a ModuleList, Python-side batch compaction), and ``torch.jit.trace`` of an
input-dependent instance would freeze the exit decisions of the tracing batch into the graph: a model that silently
computes something else. The ONNX files (dynamic batch, the exit rule applied between them) are the portable route.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..deploy.export import ExportError, OnnxRunner, export_onnx
from ..deploy.runtime import check_instance, deploy
from ..errors import MessError
from ..evaluate.instance import MODES, Instance, InstanceError, KeptExit
from ..io import expand_home
from ..search.report import Row
from ..study import open_study
from ..study.config import StudyConfig
from .args import add_trust, declare_files, folder, positive_int, size

__all__ = ["add_parser", "run", "chosen_instance", "verify_export"]

TOLERANCE = 1e-4  # per logit, relative to the largest logit's magnitude (and at least absolute)


def add_parser(sub: Any) -> None:
    e = sub.add_parser(
        "export",
        help="export a chosen instance of a study to ONNX (one file per stage and head)",
        description="Export an instance of a study's network to ONNX files for onnxruntime, verify "
        "them against PyTorch on a sample batch and write them to a new folder.",
    )
    e.add_argument("study", help="study folder (precomputed/<name>) or run folder (multi_exit.pt and a cache)")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--instance", metavar="FILE", help="instance JSON (the app's Pareto page, or `search --out`)")
    which.add_argument(
        "--row", choices=[r.value for r in Row], help="a row of the study's results table instead of a file"
    )
    e.add_argument("--mode", choices=MODES, default="input-dependent", help="with --row: the results table's mode")
    e.add_argument(
        "--onnx", required=True, type=folder, metavar="DIR", help="folder to create (must not exist, or be empty)"
    )
    e.add_argument("--size", type=size, help="HxW the files are exported for (default: the study's input size)")
    e.add_argument(
        "--images",
        type=positive_int,
        default=4,
        help="images of the verification batch (the study's split when it loads, else seeded noise)",
    )
    e.add_argument("--data-root", help="where the study's dataset lives on this machine (default: its data_root)")
    add_trust(e)
    declare_files(e, reads=("study", "instance"), writes=("onnx",))
    e.set_defaults(run=run)


def _check_destination(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; choose another --onnx folder")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"{out}: exists and is not empty; choose a new --onnx folder or remove this one first")


def chosen_instance(
    study: Any, *, file: str | None = None, row: str | None = None, mode: str = "input-dependent"
) -> tuple[Instance, str]:
    """The instance ``file`` holds, or that of results ``row`` in the ``mode`` table of ``study``, and a name of where
    it came from for messages."""
    if file is not None:
        return Instance.load(file), file
    where = f"study {study.name}: {mode} row {row}"
    table = study.results(mode)
    found = table[[Row(row) is r for r in table["id"]]]
    if found.empty:
        raise ExportError(
            f"{where}: not in the results table (rows: {', '.join(r.value for r in table['id'] if r is not None)})"
        )
    instance = found["instance"].iloc[0]
    if instance is None:
        raise ExportError(
            f"{where}: a bound that knows each image's labels, not a deployable instance; choose another --row"
        )
    return instance, where


def _check_shipped(study: Any, instance: Instance, where: str) -> None:
    """Refuse heads a packed study leaves out of its weights (``unshipped_heads``), before loading them."""
    unshipped = study.manifest.get("unshipped_heads") or {}
    for kept in instance.exits:
        if kept.config in unshipped.get(str(kept.exit), ()):
            raise ExportError(
                f"{where}: exit {kept.exit} uses head '{kept.config}', which study {study.name} does not ship (its "
                f"manifest.json lists it under unshipped_heads: heavy configurations ship only where a stored "
                f"instance uses them); choose an instance with shipped heads, or export from the run folder the "
                f"study was built from (runs/{study.name}/exits)"
            )
    model = (instance.source or {}).get("model")
    if model and study.manifest.get("model") and model != study.manifest["model"]:
        raise ExportError(
            f"{where}: searched on model {model!r} but study {study.name} holds "
            f"{study.manifest['model']!r}; choose an instance of this study"
        )


def _sample(study: Any, hw: tuple[int, int], images: int, data_root: str | None) -> tuple[torch.Tensor, str]:
    """The first ``images`` images of the study's split when its dataset loads here, else a seeded noise batch."""
    config = study.manifest.get("config")
    split = study.cache.meta.get("split", "val")
    if isinstance(config, dict):
        try:
            data = StudyConfig.from_dict(config).eval_dataset(split, hw, root=data_root)
            n = min(images, len(data))
            if n:
                return torch.stack([data[i][0] for i in range(n)]), f"the first {n} images of {split}"
        except (MessError, OSError):
            pass
    generator = torch.Generator().manual_seed(0)
    return torch.randn(images, 3, *hw, generator=generator), f"{images} images of seeded noise (dataset not found)"


def verify_export(net: Any, instance: Instance, runner: OnnxRunner, x: torch.Tensor) -> tuple[list[str], list[int]]:
    """Problems found running ``runner`` against ``deploy(net, instance)`` on ``x``: the instance's outputs (and exit
    decisions), and for stage-wise exports every kept head and the final exit on every image, whichever exit the
    policy picks; empty when they agree within :data:`TOLERANCE`. Also the exit each image took in PyTorch
    (input-dependent; empty otherwise)."""
    problems: list[str] = []
    decisions: list[int] = []

    def compare(what: str, got: torch.Tensor, want: torch.Tensor) -> None:
        worst = float((got - want).abs().max())
        if worst > TOLERANCE * max(1.0, float(want.abs().max())):
            problems.append(f"{what}: ONNX and PyTorch differ by up to {worst:.2e}")

    with torch.no_grad():
        want = deploy(net, instance)(x)
        got = runner(x)
        if instance.mode == "input-dependent":
            (got, taken), (want, want_taken) = got, want
            decisions = want_taken.tolist()
            if not torch.equal(taken, want_taken):
                problems.append(f"exit decisions differ: ONNX {taken.tolist()}, PyTorch {want_taken.tolist()}")
            else:
                compare("the instance's output", got, want)
        elif instance.mode == "budgeted":
            compare("the instance's output", got, want)
        if instance.mode != "budgeted":
            every = Instance("anytime", tuple(KeptExit(e.exit, e.config) for e in instance.exits))
            for (exit, g), w in zip(runner.stream(x), deploy(net, every)(x)):
                compare(f"exit {exit}", g, w)
    return problems, decisions


def _describe_files(out: Path) -> list[str]:
    lines = []
    for f in sorted(out.iterdir(), key=lambda p: (p.suffix != ".onnx", p.name)):
        kind = {"model": "the whole submodel", "stage": "stage", "head": "head at exit"}.get(f.stem.split("_")[0], "")
        what = f"{kind} {f.stem.split('_')[1]}" if "_" in f.stem else kind or "files, hashes, instance, input size"
        n = f.stat().st_size
        shown = f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} B"
        lines.append(f"  {f.name:<16} {shown:>10}  {what}")
    return lines


def run(args: argparse.Namespace) -> int:
    out = expand_home(args.onnx, MessError)
    _check_destination(out)
    study = open_study(args.study)
    instance, where = chosen_instance(study, file=args.instance, row=args.row, mode=args.mode)
    _check_shipped(study, instance, where)
    net, _ = study.load_network(consent=args.trust_model_code)
    try:
        check_instance(net, instance)
    except InstanceError as exc:
        raise InstanceError(f"{where}: does not fit study {study.name}: {exc}") from None
    hw = tuple(args.size or study.cache.meta.get("input_size") or net.example_shape[1:])
    print(f"study {study.name}: {instance.mode} {instance.describe()}  (from {where})")
    x, sample = _sample(study, hw, args.images, args.data_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        built = export_onnx(net, instance, staging / "onnx", input_size=hw)
        problems, decisions = verify_export(net, instance, OnnxRunner(built), x)
        if problems:
            for line in problems:
                print(f"  problem: {line}")
            print(f"verification against PyTorch failed on {sample}; nothing written to {out}")
            return 1
        _check_destination(out)  # nothing appeared there meanwhile
        if out.is_dir():
            out.rmdir()
        built.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {out} for inputs (B, 3, {hw[0]}, {hw[1]}), any batch size:")
    print("\n".join(_describe_files(out)))
    print(
        f"verified with onnxruntime on {sample}: every output within {TOLERANCE:g} of PyTorch"
        + (f", same exit decisions (exit taken per image: {decisions})" if decisions else "")
    )
    print(f"run it: OnnxRunner({str(out)!r})(x) from mess_core.deploy.export (see the README)")
    return 0
