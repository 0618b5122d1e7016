"""ONNX export of a deployed instance (torch.onnx's dynamo exporter) and :class:`OnnxRunner`, which runs it with
onnxruntime under the same exit policy.

* ``budgeted``: one file, ``model.onnx``, the static submodel.
* ``anytime`` and ``input-dependent``: one file per stage (``stage_K.onnx``) and per kept head (``head_K.onnx``), so a
  runtime can stop after any of them; the runner applies the exit rule between them and compacts the batch exactly as
  :class:`~mess_core.deploy.runtime.EarlyExitNet` does.

Every directory holds ``manifest.json``: the instance, the input size the files were exported for (the batch
dimension is dynamic, height and width are fixed: shape metadata such as the output size is baked into the graphs),
which tensors each file takes and returns, and each file's SHA-256. The directory is written beside its destination
and renamed into place, so a failed export never leaves a half-written one.

Example:
    >>> import tempfile, torch, mess_core
    >>> from mess_core.evaluate.instance import Instance, KeptExit
    >>> net = mess_core.convert(mess_core.models.create("resnet18_fcn", num_classes=5).eval(),
    ...                         torch.zeros(1, 3, 64, 64), num_exits=3)
    >>> _ = net.attach("crm25p-b0-fcn").eval()
    >>> inst = Instance.input_dependent([KeptExit(1, "crm25p-b0-fcn", th_img=0.0)])
    >>> out = export_onnx(net, inst, tempfile.mkdtemp() + "/onnx", input_size=(64, 64))  # doctest: +SKIP
    >>> logits, taken = OnnxRunner(out)(torch.randn(2, 3, 64, 64))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..conversion.network import MultiExitNet
from ..errors import MessError
from ..evaluate.instance import Instance
from ..io import atomic_write_text, read_json
from .runtime import BudgetedNet, deploy, probe_live

__all__ = ["export_onnx", "OnnxRunner", "ExportError", "ONNX_FORMAT", "session_options"]

ONNX_FORMAT = "mess-onnx/1"


class ExportError(MessError):
    """An instance that cannot be exported, or an export directory that cannot be used."""


class _Stage(nn.Module):
    """Stage ``index`` as a function of the batch tensors alone: metadata and batch-independent values it receives
    are baked in as constants; it returns only the batch tensors the next stage and heads need."""

    def __init__(
        self,
        stage: nn.Module,
        inputs: Sequence[Any],
        tensor_in: Sequence[int],
        tensor_out: Sequence[int] | None,
        output_key: str | int | None,
    ):
        super().__init__()
        self.stage = stage
        self.constants = [None if i in tensor_in else v for i, v in enumerate(inputs)]
        self.tensor_in = tuple(tensor_in)
        self.tensor_out = None if tensor_out is None else tuple(tensor_out)
        self.output_key = output_key

    def forward(self, *tensors: torch.Tensor) -> Any:
        args = list(self.constants)
        for pos, t in zip(self.tensor_in, tensors):
            args[pos] = t
        out = self.stage(*args)
        if self.tensor_out is None:  # the final stage: its logits
            return out if self.output_key is None else out[self.output_key]
        return tuple(out[i] for i in self.tensor_out)


class _Head(nn.Module):
    def __init__(self, head: nn.Module, size: Sequence[int]):
        super().__init__()
        self.head = head
        self.size = tuple(int(v) for v in size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features, self.size)


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic: tuple = tuple({0: batch} for _ in args)
    if isinstance(module, _Stage):  # forward(*tensors): one entry for the whole var-positional argument
        dynamic = (dynamic,)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a sample batch of 2: torch.export specialises dimensions of size 1
        torch.onnx.export(
            module.eval(), args, str(path), dynamo=True, dynamic_shapes=dynamic, external_data=False, verbose=False
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_onnx(
    net: MultiExitNet, instance: Instance, out_dir: str | os.PathLike, *, input_size: Sequence[int] | None = None
) -> Path:
    """Export ``instance`` of ``net`` to ``out_dir`` (see the module docstring) for inputs of ``input_size``
    (H, W; the network's example size by default). Returns the directory."""
    model = deploy(net, instance)
    h, w = (int(v) for v in (input_size or net.example_shape[1:]))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        device, dtype = net._placement()
        x = torch.randn(2, 3, h, w, device=device, dtype=dtype)
        manifest: dict[str, Any] = {
            "format": ONNX_FORMAT,
            "instance": instance.to_dict(),
            "input_size": [h, w],
            "num_classes": net.num_classes,
            "num_exits": net.num_exits,
            "opset": None,
        }
        if isinstance(model, BudgetedNet):
            _export(model, (x,), tmp / "model.onnx")
            manifest["model"] = "model.onnx"
        else:
            kinds = probe_live(net, net.num_exits - 1, (h, w))[0]
            stages, heads = [], []
            inputs: list[Any] = [x]
            tensor_in = [0]
            steps = net.walk(x)
            for index in range(1, net.num_exits + 1):
                last = index == net.num_exits
                if not last and {"shape", "size"} & set(kinds[index - 1]):
                    raise ExportError(
                        f"stage {index} hands on a shape holding the batch size; the per-stage ONNX "
                        "files take a dynamic batch and cannot carry it. Export a budgeted instance."
                    )
                tensor_out = None if last else [i for i, k in enumerate(kinds[index - 1]) if k == "tensor"]
                module = _Stage(net.stages[index - 1], inputs, tensor_in, tensor_out, net.output_key)
                # separate copies: values crossing a cut may share memory (a slice kept as a skip beside the map it
                # views), and torch.export refuses aliased inputs when the stage writes into one (ReLU(inplace=True))
                args = tuple(inputs[i].clone() for i in tensor_in)
                _export(module, args, tmp / f"stage_{index}.onnx")
                stages.append({"index": index, "file": f"stage_{index}.onnx", "outputs": tensor_out})
                if last:
                    break
                with torch.no_grad():
                    step = next(steps)  # the stage just exported, run for the inputs of the next one
                if index in model.exits:
                    feature = net.feature_slots[index - 1]
                    if feature not in tensor_out:
                        raise ExportError(f"exit {index} reads a feature map that does not depend on the batch")
                    _export(
                        _Head(model.heads[str(index)], (h, w)), (step.features.clone(),), tmp / f"head_{index}.onnx"
                    )
                    heads.append({"exit": index, "file": f"head_{index}.onnx", "feature": tensor_out.index(feature)})
                inputs, tensor_in = list(step.live), tensor_out
            manifest["stages"], manifest["heads"] = stages, heads
        import onnx

        files = sorted(p.name for p in tmp.glob("*.onnx"))
        manifest["opset"] = int(onnx.load(str(tmp / files[0]), load_external_data=False).opset_import[0].version)
        manifest["files"] = {name: _sha256(tmp / name) for name in files}
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def session_options(threads: int | None = None) -> Any:
    """onnxruntime options for many sessions in one process: without spinning, the idle thread pools of the sessions
    not running would busy-wait against the one that is."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


class OnnxRunner:
    """Runs an exported instance with onnxruntime, applying the instance's exit policy between the files exactly as
    :func:`~mess_core.deploy.runtime.deploy`'s module does. Call it like that module: budgeted -> logits, anytime ->
    list of logits (:meth:`stream` yields them one by one), input-dependent -> ``(logits, exit_taken)``. Inputs and
    outputs are torch tensors on the CPU."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        verify: bool = True,
    ):
        import onnxruntime as ort

        self.directory = Path(directory)
        path = self.directory / "manifest.json"
        manifest = read_json(path, ExportError, "no manifest; export the instance with export_onnx first")
        if manifest.get("format") != ONNX_FORMAT:
            raise ExportError(f"{path}: format {manifest.get('format')!r}, expected {ONNX_FORMAT!r}")
        if verify:
            for name, digest in manifest["files"].items():
                file = self.directory / name
                if not file.is_file():
                    raise ExportError(f"{file}: missing (listed in {path})")
                if _sha256(file) != digest:
                    raise ExportError(f"{file}: its SHA-256 differs from the manifest's; the export is damaged")
        self.manifest = manifest
        self.instance = Instance.from_dict(manifest["instance"], where=f"{path}: instance")
        self.input_size = tuple(manifest["input_size"])
        self.num_exits = int(manifest["num_exits"])
        options = session_options(threads)
        providers = list(providers or ["CPUExecutionProvider"])

        def session(name: str) -> Any:
            return ort.InferenceSession(str(self.directory / name), options, providers=providers)

        if "model" in manifest:
            self.model = session(manifest["model"])
        else:
            self.stages = [session(s["file"]) for s in manifest["stages"]]
            self.heads = {h["exit"]: (session(h["file"]), h["feature"]) for h in manifest["heads"]}
        self.th_img = {e.exit: e.th_img for e in self.instance.exits}

    @staticmethod
    def _run(sess: Any, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})

    def _check(self, x: torch.Tensor) -> np.ndarray:
        if tuple(x.shape[-2:]) != self.input_size or x.dim() != 4:
            raise ExportError(
                f"{self.directory}: exported for inputs (B, 3, {self.input_size[0]}, {self.input_size[1]}), "
                f"got {tuple(x.shape)}; export again with input_size={tuple(x.shape[-2:])}"
            )
        return np.ascontiguousarray(x.detach().cpu().float().numpy())

    def stream(self, x: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Anytime: ``(exit, logits)`` after each kept exit and the final one."""
        live = [self._check(x)]
        for index, sess in enumerate(self.stages, start=1):
            live = self._run(sess, live)
            if index == self.num_exits:
                yield index, torch.from_numpy(live[0])
            elif index in self.heads:
                head, feature = self.heads[index]
                yield index, torch.from_numpy(self._run(head, [live[feature]])[0])

    def __call__(self, x: torch.Tensor) -> Any:
        mode = self.instance.mode
        if mode == "budgeted":
            return torch.from_numpy(self._run(self.model, [self._check(x)])[0])
        if mode == "anytime":
            return [logits for _, logits in self.stream(x)]
        return self._early_exit(x)

    def _early_exit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        policy = self.instance.policy
        live = [self._check(x)]
        batch = x.shape[0]
        taken = torch.full((batch,), self.num_exits, dtype=torch.long)
        running = torch.arange(batch)
        out: torch.Tensor | None = None
        for index, sess in enumerate(self.stages, start=1):
            live = self._run(sess, live)
            if index == self.num_exits:
                final = torch.from_numpy(live[0])
                if out is None:
                    return final, taken
                out[running] = final
                return out, taken
            if index not in self.heads:
                continue
            head, feature = self.heads[index]
            logits = torch.from_numpy(self._run(head, [live[feature]])[0])
            if out is None:
                out = logits.new_empty((batch, *logits.shape[1:]))
            leave = policy.exits(logits, self.th_img[index])
            n_leave = int(leave.sum())
            if n_leave:
                out[running[leave]] = logits[leave]
                taken[running[leave]] = index
            if n_leave == running.numel():
                return out, taken
            if n_leave:
                stay = (~leave).nonzero().squeeze(1)
                running = running[stay]
                keep = stay.numpy()
                live = [np.ascontiguousarray(a[keep]) for a in live]
        raise AssertionError("unreachable: the final stage always returns")
