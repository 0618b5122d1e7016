"""Early exit on a drive, frame by frame, as a camera would run it: each frame goes alone (batch 1) through the
deployed input-dependent instance (:class:`~mess_core.deploy.runtime.EarlyExitNet`, or its ONNX files run by
onnxruntime) and through the original model, each timed on this machine, and the two predictions are compared.

A :class:`FrameResult` holds what one frame did: the exit it left at, its image confidence at every kept exit it
reached, the GFLOPs of its path (counted) and the milliseconds of both models (measured), how many pixels agree
with the original model's prediction, and its mIoU against labels where the drive has them. :class:`DriveTotals`
adds them up as the drive goes (time and GFLOPs saved, frames per second of each). Nothing is simulated: the exit
shown is the one the deployed module took, and the time is the time it took.

Example (an untrained network, so the exits are arbitrary; the shapes and the bookkeeping are not):
    >>> import torch, mess_core
    >>> from mess_core.data.frames import GeneratedDrive
    >>> from mess_core.evaluate.instance import Instance, KeptExit
    >>> model = mess_core.models.create("resnet18_fcn", num_classes=7).eval()
    >>> net = mess_core.convert(model, torch.zeros(1, 3, 48, 64), num_exits=3)
    >>> _ = net.attach("crm25p-b0-fcn").eval()
    >>> driver = Driver(net, model, Instance.input_dependent([KeptExit(1, "crm25p-b0-fcn", th_img=0.0)]))
    >>> totals = DriveTotals()
    >>> for frame in GeneratedDrive(size=(48, 64), shots=1, frames_per_shot=3).frames():
    ...     result, prediction = driver.run(frame)
    ...     totals.add(result)
    >>> result.exit, prediction.shape, totals.frames, 0.0 <= result.agreement <= 1.0
    (1, (48, 64), 3, True)
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..conversion.network import MultiExitNet
from ..data.frames import Frame
from ..data.transforms import frame_tensor
from ..errors import MessError
from ..evaluate.instance import Instance, iou_of_counts, mean_iou
from ..evaluate.policy import predicted_labels
from .bench import OriginalModel
from .runtime import EarlyExitNet, deploy

__all__ = ["FrameResult", "DriveTotals", "Driver", "DriveError", "ENGINES", "FRAME_COLUMNS"]

# the engines a drive can run the instance on: PyTorch eager, or the instance's ONNX files through onnxruntime
ENGINES = ("torch", "onnx")


class DriveError(MessError):
    """An instance or an engine a drive cannot run; the message says what to choose instead."""


@dataclass(frozen=True)
class FrameResult:
    """What one frame did. Exits are numbered as in the network (N: the final exit); ``c_img`` has one value per
    kept exit, NaN where the frame had already left; ``ms`` is the deployed instance on ``engine``, ``torch_ms``
    the same instance in PyTorch when another engine drew the frame (else equal to ``ms``)."""

    index: int
    name: str
    exit: int
    c_img: tuple[float, ...]
    ms: float
    original_ms: float
    gflops: float
    original_gflops: float
    agreement: float  # fraction of pixels predicted as the original model predicts them
    miou: float | None  # against the frame's labels (classes in the labels or the prediction); None: no labels
    original_miou: float | None
    engine: str = "torch"
    torch_ms: float = math.nan

    def row(self, kept: Sequence[int]) -> dict[str, Any]:
        """The frame as a CSV row: one ``c_img_exitK`` column per kept exit."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "c_img"}
        out.update({f"c_img_exit{e}": c for e, c in zip(kept, self.c_img)})
        return out


FRAME_COLUMNS = tuple(f.name for f in dataclasses.fields(FrameResult) if f.name != "c_img")


@dataclass
class DriveTotals:
    """Running totals over the frames seen so far."""

    frames: int = 0
    ms: float = 0.0
    original_ms: float = 0.0
    gflops: float = 0.0
    original_gflops: float = 0.0
    exits: dict[int, int] = field(default_factory=dict)

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        self.ms += result.ms
        self.original_ms += result.original_ms
        self.gflops += result.gflops
        self.original_gflops += result.original_gflops
        self.exits[result.exit] = self.exits.get(result.exit, 0) + 1

    @property
    def ms_saved(self) -> float:
        return self.original_ms - self.ms

    @property
    def gflops_saved(self) -> float:
        return self.original_gflops - self.gflops

    @property
    def fps(self) -> float:
        """Frames per second of the deployed instance (model time alone)."""
        return 1000.0 * self.frames / self.ms if self.ms > 0 else math.nan

    @property
    def original_fps(self) -> float:
        return 1000.0 * self.frames / self.original_ms if self.original_ms > 0 else math.nan

    @property
    def speedup(self) -> float:
        """The original model's time over the instance's."""
        return self.original_ms / self.ms if self.ms > 0 else math.nan


def _frame_miou(labels: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int) -> float:
    """mIoU of one frame over the classes present in its labels or its prediction (as the evaluation cache's
    ``image_miou``), ignoring unlabelled pixels."""
    keep = labels != ignore_index
    lab, pred = labels[keep], prediction[keep]
    counts = [np.bincount(v, minlength=num_classes)[:num_classes] for v in (lab, lab[lab == pred], pred)]
    return float(mean_iou(iou_of_counts(*counts)))


def _timed(call: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, 1000.0 * (time.perf_counter() - start)


class Driver:
    """Runs frames one at a time through ``instance`` deployed on ``net`` and through ``model`` (the original
    network ``net`` was converted from). ``engine="onnx"`` exports the instance to ONNX (into ``workdir``, or a
    temporary folder kept as long as the driver) and draws the frames from onnxruntime's outputs, timing the
    PyTorch instance beside it. ``warmup`` frames of zeros run first so that the first real frame is not charged
    for allocation."""

    def __init__(
        self,
        net: MultiExitNet,
        model: nn.Module,
        instance: Instance,
        *,
        engine: str = "torch",
        num_classes: int | None = None,
        ignore_index: int = 255,
        warmup: int = 2,
        device: str | torch.device = "cpu",
        workdir: str | Path | None = None,
    ) -> None:
        if instance.mode != "input-dependent":
            raise DriveError(
                f"a drive shows per-frame early exit: the instance is {instance.mode}; choose an input-dependent one"
            )
        if engine not in ENGINES:
            raise DriveError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        self.instance, self.engine = instance, engine
        self.device = torch.device(device)
        self.kept = tuple(e.exit for e in instance.exits)
        self.num_exits = net.num_exits
        self.num_classes = int(num_classes if num_classes is not None else net.num_classes)
        self.ignore_index = int(ignore_index)
        deployed = deploy(net, instance).to(self.device)
        assert isinstance(deployed, EarlyExitNet)
        self.deployed = deployed
        self.original = OriginalModel(model, net.output_key).eval().to(self.device)
        self._net = net
        self._path_gflops: dict[tuple[int, int], tuple[float, float]] = {}
        self._onnx: Any = None
        self._tmp: Any = None
        if engine == "onnx":
            self._onnx = self._export(net, workdir)
        self._warmup(int(warmup))

    def _export(self, net: MultiExitNet, workdir: str | Path | None) -> Any:
        from .export import OnnxRunner, export_onnx

        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mess-drive-")
            workdir = self._tmp.name
        size = tuple(int(s) for s in net.example_shape[-2:])
        return OnnxRunner(export_onnx(net, self.instance, Path(workdir) / "onnx", input_size=size))

    def _warmup(self, rounds: int) -> None:
        if rounds <= 0:
            return
        x = torch.zeros(1, 3, *self._net.example_shape[-2:], device=self.device)
        with torch.inference_mode():
            for _ in range(rounds):
                self.deployed(x)
                self.original(x)
                if self._onnx is not None:
                    self._onnx(x.cpu())

    def path_gflops(self, size: Sequence[int], exit: int) -> tuple[float, float]:
        """(GFLOPs of leaving at ``exit`` with every kept head on the way, the original model's GFLOPs) for one
        image of ``size``."""
        key = (int(size[0]), int(size[1])), int(exit)
        if key not in self._path_gflops:
            kept = {e.exit: e.config for e in self.instance.exits}
            path, full = self._net.path_flops(kept, exit, key[0])
            self._path_gflops[key] = (path / 1e9, full / 1e9)
        return self._path_gflops[key]

    def run(self, frame: Frame) -> tuple[FrameResult, np.ndarray]:
        """One frame through the instance and the original model: its result and the instance's prediction
        (H, W) int64."""
        x = frame_tensor(frame.rgb).to(self.device)
        with torch.inference_mode():
            (logits, taken, confidence), torch_ms = _timed(
                lambda: self.deployed.forward_with_confidence(x), self.device
            )
            full, original_ms = _timed(lambda: self.original(x), self.device)
            ms, exit = torch_ms, int(taken[0])
            if self._onnx is not None:
                (logits, onnx_taken), ms = _timed(lambda: self._onnx(x.cpu()), torch.device("cpu"))
                exit = int(onnx_taken[0])
        prediction = predicted_labels(logits)[0].cpu().numpy()
        original = predicted_labels(full)[0].cpu().numpy()
        gflops, original_gflops = self.path_gflops(frame.rgb.shape[:2], exit)
        labelled = frame.labels is not None
        result = FrameResult(
            index=frame.index,
            name=frame.name,
            exit=exit,
            c_img=tuple(float(c) for c in confidence[0].cpu()),
            ms=ms,
            original_ms=original_ms,
            gflops=gflops,
            original_gflops=original_gflops,
            agreement=float((prediction == original).mean()),
            miou=_frame_miou(frame.labels, prediction, self.num_classes, self.ignore_index) if labelled else None,
            original_miou=_frame_miou(frame.labels, original, self.num_classes, self.ignore_index)
            if labelled
            else None,
            engine=self.engine,
            torch_ms=torch_ms,
        )
        return result, prediction
