"""Try the faults a careful new user runs into, and print what each gets: prints a table, asserts nothing.

Every case runs the command line in this process (``mess_core.cli.main``) inside a scratch folder holding a copy of
the shipped synthetic study, damaged copies of its files, a tiny trained run and a small folder dataset with one
corrupt image. For each case the table says:

* ``exit``: the exit status (2: bad input, 1: a bug, 0: success; ``RAW``: an exception escaped the error boundary);
* ``lines``: how many lines the command wrote to stderr (a refusal is one line);
* ``trace``: whether a Python traceback reached the user;
* ``changed``: files that changed outside the case's own output (must be none);
* the first 110 characters of the message.

A fault is handled when the exit status is 2 (or the command refuses with 1 when it reports problems, as
``study check`` does), there is no traceback, one line, and nothing else changed. The last line counts the cases that
are not.

Usage: .venv/bin/python -m benchmarks.fault_sweep [--keep DIR] [--only WORD]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from benchmarks import REPO

SYNTHETIC = REPO / "precomputed" / "synthetic-mobilenetv2-fcn"
TINY_DATA = ["--data-option", "length=4", "--data-option", "size=[48, 64]", "--crop", "48x64"]


@dataclass
class Case:
    group: str
    name: str
    argv: list[str]
    # paths (relative to the scratch folder) the case may write: its own run, study or output file
    writes: tuple[str, ...] = ()
    # exit statuses that mean "handled" (a check that finds problems reports them with 1)
    expect: tuple[int, ...] = (2,)
    setup: Callable[[Path], None] | None = None


@dataclass
class Outcome:
    case: Case
    status: str
    lines: int
    trace: bool
    changed: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def handled(self) -> bool:
        return (
            self.status in {str(s) for s in self.case.expect}
            and not self.trace
            and self.lines <= 1
            and not self.changed
        )


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with a few bytes of image data: an upload bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class _Payload:
    """A pickled object that creates a file when unpickled: a malicious checkpoint."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def prepare(root: Path) -> None:
    """The scratch folder every case runs in."""
    import numpy as np
    from PIL import Image

    from mess_core.cli import main as cli

    shutil.copytree(SYNTHETIC, root / "study")
    cache = (root / "study" / "val.npz").read_bytes()
    weights = (root / "study" / "multi_exit.pt").read_bytes()
    (root / "empty.npz").write_bytes(b"")
    (root / "cut.npz").write_bytes(cache[: len(cache) // 2])
    (root / "empty.pt").write_bytes(b"")
    (root / "cut.pt").write_bytes(weights[:300])
    (root / "text.pt").write_text("not a checkpoint\n")
    (root / "a_file").write_text("a file, not a folder\n")
    (root / "garbage.json").write_text("{not json")
    (root / "wrong.json").write_text(json.dumps({"mode": "input-dependent", "exits": "all of them"}))
    (root / "bomb.png").write_bytes(png_header(40_000, 40_000))
    import torch

    torch.save({"model": _Payload(root / "pwned")}, root / "evil.pt")  # loading it must never run the payload
    # a folder dataset with one corrupt image, for the data-loading workers
    data = root / "folder_data"
    for sub in ("train/images", "train/masks", "val/images", "val/masks"):
        (data / sub).mkdir(parents=True)
    (data / "dataset.yaml").write_text("classes: [background, thing]\n")
    for split in ("train", "val"):
        for i in range(4):
            Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8)).save(data / split / "images" / f"im{i}.png")
            Image.fromarray((np.arange(48 * 64).reshape(48, 64) % 2).astype(np.uint8)).save(
                data / split / "masks" / f"im{i}.png"
            )
    good = (data / "train" / "images" / "im2.png").read_bytes()
    (data / "train" / "images" / "im2.png").write_bytes(good[: len(good) // 3])
    # a tiny trained run, and a copy of it elsewhere (resume must continue the copy, never the original)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = cli(
            [
                "train",
                "--stage",
                "backbone",
                "--out",
                str(root / "run"),
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--workers",
                "0",
                "--no-progress",
                *TINY_DATA,
            ]
        )
    if status != 0:
        raise SystemExit("could not train the tiny run the resume cases need")
    shutil.copytree(root / "run", root / "run_copy")
    # text files that are not settings, a model that misbehaves, a folder holding someone's work
    (root / "latin1.yaml").write_bytes("name: x\ndescription: caf\xe9\n".encode("latin-1"))
    (root / "utf16.yaml").write_bytes("name: x\n".encode("utf-16"))
    (root / "binary.yaml").write_bytes(bytes(range(256)))
    (root / "intkeys.yaml").write_text("name: x\n1: y\n")
    (root / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000)
    (root / "folder.yaml").mkdir()
    (root / "utf16.json").write_bytes('{"mode": "budgeted"}'.encode("utf-16"))
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "thesis").mkdir()
    (root / "thesis" / "thesis.txt").write_text("four years of work\n")
    shutil.copyfile(REPO / "tests" / "bad_models.py", root / "bad_models.py")
    (root / "tiny.yaml").write_text(study_yaml_text("tiny"))


def study_yaml_text(name: str, **changes) -> str:
    import yaml

    settings = {
        "name": name,
        "model": "mobilenetv2_fcn",
        "data_options": {"size": [48, 64], "length": 4},
        "crop": [48, 64],
        "batch_size": 2,
        "exit_space": "light",
        "latency": False,
        "bench_images": 0,
        "stages": {s: {"epochs": 1} for s in ("backbone", "pretrain", "exits")},
    }
    settings.update(changes)
    return yaml.safe_dump(settings)


def study_yaml(root: Path, name: str, line: str) -> str:
    """A tiny study (one epoch per stage on 4 small scenes, so a setting that is not refused costs a minute, not
    hours) with one setting replaced by ``line``."""
    import yaml

    path = root / f"{name}.yaml"
    path.write_text(study_yaml_text(name, **yaml.safe_load(line)))
    return str(path)


def manifest_edit(tag: str, **changes) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        folder = root / f"study_{tag}"
        if folder.exists():  # the check and the report case share one damaged copy
            return
        shutil.copytree(root / "study", folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest.update(changes)
        (folder / "manifest.json").write_text(json.dumps(manifest))

    return edit


def cases(root: Path) -> list[Case]:
    r = str(root)
    study, cache = f"{r}/study", f"{r}/study/val.npz"
    weights = f"{r}/study/multi_exit.pt"
    search = ["search", "--cache", cache, "--out", f"{r}/out.json"]
    train = ["train", "--stage", "backbone", "--out", f"{r}/new_run", "--epochs", "1", "--no-progress", *TINY_DATA]
    make_cache = [
        "cache",
        "--multi-exit",
        weights,
        "--data",
        "synthetic",
        "--out",
        f"{r}/new.npz",
        "--data-option",
        "length=2",
    ]
    out: list[Case] = []

    def add(group: str, name: str, argv: list[str], **kw) -> None:
        out.append(Case(group, name, argv, **kw))

    # damaged or wrong files
    for f in ("empty.npz", "cut.npz", "missing.npz", "a_file", "study"):
        add("files", f"search --cache {f}", ["search", "--cache", f"{r}/{f}"])
    for f in ("empty.pt", "cut.pt", "text.pt", "missing.pt", "evil.pt"):
        add(
            "files",
            f"cache --multi-exit {f}",
            ["cache", "--multi-exit", f"{r}/{f}", "--data", "synthetic", "--out", f"{r}/new.npz"],
        )
        add("files", f"train --init {f}", [*train, "--init", f"{r}/{f}"])
    add(
        "files",
        "export --instance garbage.json",
        ["export", study, "--instance", f"{r}/garbage.json", "--onnx", f"{r}/onnx"],
    )
    add(
        "files",
        "export --instance wrong types",
        ["export", study, "--instance", f"{r}/wrong.json", "--onnx", f"{r}/onnx"],
    )
    add("files", "export --onnx names a file", ["export", study, "--row", "backbone", "--onnx", f"{r}/a_file"])
    add(
        "files",
        "bench --instance garbage.json",
        ["bench", "--multi-exit", weights, "--instance", f"{r}/garbage.json", "--images", "1", "--repeats", "1"],
    )
    # damaged studies
    for tag, label, changes in (
        ("outside", "manifest cache outside", {"cache": "../cut.npz"}),
        ("cachetype", "manifest cache type", {"cache": 3}),
        ("filestype", "manifest files type", {"files": ["val.npz"]}),
        ("configtype", "manifest config type", {"config": "oops"}),
    ):
        folder = f"{r}/study_{tag}"
        add("studies", f"study check, {label}", ["study", "check", folder], setup=manifest_edit(tag, **changes))
        add("studies", f"study report, {label}", ["study", "report", folder], setup=manifest_edit(tag, **changes))

    def no_manifest(root: Path) -> None:
        if (root / "study_nomanifest").exists():
            return
        shutil.copytree(root / "study", root / "study_nomanifest")
        (root / "study_nomanifest" / "manifest.json").unlink()

    def cut_cache(root: Path) -> None:
        if (root / "study_cutcache").exists():
            return
        shutil.copytree(root / "study", root / "study_cutcache")
        shutil.copy(root / "cut.npz", root / "study_cutcache" / "val.npz")

    add("studies", "study check, no manifest", ["study", "check", f"{r}/study_nomanifest"], setup=no_manifest)
    add(
        "studies",
        "study check, truncated val.npz",
        ["study", "check", f"{r}/study_cutcache"],
        setup=cut_cache,
        expect=(1, 2),
    )
    add("studies", "study report, truncated val.npz", ["study", "report", f"{r}/study_cutcache"], setup=cut_cache)
    add("studies", "study check, not a folder", ["study", "check", f"{r}/a_file"])
    add("studies", "study check, NUL in path", ["study", "check", f"{r}/stu\0dy"])
    add("studies", "study check, 5000-char path", ["study", "check", f"{r}/{'x' * 5000}"])
    # study settings, refused when the YAML is read
    for name, line in (
        ("badmodel", "model: nosuchnet"),
        ("badbatch", "batch_size: 1.5"),
        ("badlr", "stages: {backbone: {epochs: 1, lr: fast}}"),
        ("badmaxexits", "max_exits: two"),
        ("badspace", "exit_space: zzz"),
        ("badcrop", "crop: [0, 0]"),
        ("badsplit", "cache_split: 5"),
        ("badengine", "bench_engines: [foo]"),
        ("badkey", "colour: blue"),
        ("badlatency", "latency: maybe"),
        ("baddata", "dataset: nosuchdata"),
    ):
        add(
            "settings",
            f"study build, {line}",
            ["study", "build", f"{r}/{name}.yaml", "--work", f"{r}/w_{name}", "--out", f"{r}/p_{name}"],
            setup=lambda root, name=name, line=line: study_yaml(root, name, line),
        )
    add("settings", "study build, missing YAML", ["study", "build", f"{r}/nosuch.yaml"])
    add("settings", "study build, not YAML", ["study", "build", f"{r}/garbage.json"])
    # command-line values
    for flag, value in (
        ("--th-pix", "abc"),
        ("--th-pix", "1.5"),
        ("--max-drop", "-1"),
        ("--max-drop", "nan"),
        ("--budget", "0"),
        ("--max-exits", "0"),
        ("--max-exits", "50"),
        ("--exit-ids", "99"),
        ("--th-img", "2"),
    ):
        add("values", f"search {flag} {value}", [*search, flag, value])
    for flag, value in (
        ("--batch-size", "0"),
        ("--workers", "-1"),
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--device", "tpu9"),
        ("--device", "cuda"),
        ("--model", "nosuchnet"),
        ("--crop", "0x0"),
        ("--epochs", "0"),
        ("--alpha", "7"),
        ("--scale", "2 1"),
        ("--data-option", "size=abc"),
        ("--data", "nosuchdata"),
        ("--space", "zzz"),
        ("--exits", "1"),
    ):
        add("values", f"train {flag} {value}", [*train, flag, *value.split()])
    add("values", "train --out names a file", ["train", "--stage", "backbone", "--out", f"{r}/a_file", *TINY_DATA])
    add(
        "values",
        "train camvid, no such folder",
        ["train", "--stage", "backbone", "--out", f"{r}/new_run", "--data", "camvid", "--data-root", f"{r}/nowhere"],
    )
    for flag, value in (
        ("--size", "0x0"),
        ("--batch-size", "0"),
        ("--limit", "-1"),
        ("--th-pix", "abc"),
        ("--device", "tpu9"),
        ("--edge-size", "4"),
    ):
        add("values", f"cache {flag} {value}", [*make_cache, flag, value])
    add("values", "cache --out names a folder", [*make_cache[:-4], "--out", f"{r}/study"])
    for value in ("-1", "0", "abc"):
        add("values", f"check-data --limit {value}", ["check-data", "--data", "synthetic", "--limit", value])
    add("values", "bench --images 0", ["bench", "--multi-exit", weights, "--images", "0"])
    add("values", "profile --model nosuchnet", ["profile", "--model", "nosuchnet"])
    add("values", "profile --size 0 0", ["profile", "--model", "mobilenetv2_fcn", "--size", "0", "0"])
    # training faults
    add(
        "training",
        "resume a copied run",
        ["train", "--resume", "--out", f"{r}/run_copy", "--epochs", "2"],
        writes=("run_copy",),
        expect=(0,),
    )
    add("training", "resume a folder that holds no run", ["train", "--resume", "--out", f"{r}/folder_data"])
    add(
        "training",
        "diverging run (lr 1e12)",
        [
            *train[:4],
            f"{r}/diverge",
            *train[5:],
            "--lr",
            "1e12",
            "--optimizer",
            "sgd",
            "--batch-size",
            "2",
            "--workers",
            "0",
        ],
        writes=("diverge",),
    )
    add(
        "training",
        "corrupt image, 2 loader workers",
        [
            "train",
            "--stage",
            "backbone",
            "--out",
            f"{r}/folder_run",
            "--data",
            "folder",
            "--data-root",
            f"{r}/folder_data",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--workers",
            "2",
            "--crop",
            "48x64",
            "--no-progress",
        ],
        writes=("folder_run",),
    )
    add(
        "training",
        "check-data finds the corrupt image",
        ["check-data", "--data", "folder", "--data-root", f"{r}/folder_data", "--split", "train"],
        expect=(1,),
    )
    trust_and_containment_cases(root, add, train)
    return out


_HELD: list[int] = []  # lock files this process holds for the cases, kept open until it ends


def _live_lock(root: Path) -> None:
    """A run folder another command is writing: this process holds its lock, as a running train would."""
    import fcntl
    import socket

    folder = root / "locked_run"
    folder.mkdir(exist_ok=True)
    fd = os.open(folder / ".mess.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(
        fd,
        json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "what": "train --stage pretrain", "started": "earlier"}
        ).encode(),
    )
    _HELD.append(fd)


def trust_and_containment_cases(root: Path, add: Callable[..., None], train: list[str]) -> None:
    """Code a study names, outputs onto inputs and foreign folders, misbehaving model code, caches whose
    metadata contradict their arrays, text files that are not settings, and numbers beyond any sane setting."""
    r = str(root)
    study, cache, weights = f"{r}/study", f"{r}/study/val.npz", f"{r}/study/multi_exit.pt"
    for tag, label, record in (
        (
            "absfile",
            "model file outside the study",
            {"kind": "file", "target": "/tmp/x.py", "attr": "Net", "sha256": "0" * 64},
        ),
        (
            "upfile",
            "model file ../../x.py",
            {"kind": "file", "target": "../../x.py", "attr": "Net", "sha256": "0" * 64},
        ),
        ("osabort", "import os:abort", {"kind": "import", "target": "os", "attr": "abort"}),
        ("nohash", "model file without SHA-256", {"kind": "file", "target": "net.py", "attr": "Net"}),
    ):
        edit = manifest_edit(tag, model_source=record)
        add("trust", f"study check, {label}", ["study", "check", f"{r}/study_{tag}"], setup=edit)
        add(
            "trust",
            f"export, {label}",
            ["export", f"{r}/study_{tag}", "--row", "backbone", "--onnx", f"{r}/onnx_{tag}"],
            setup=edit,
        )
    add("outputs", "search --out onto its --cache", ["search", "--cache", cache, "--out", cache])
    add(
        "outputs",
        "search --front-csv onto its --cache",
        ["search", "--cache", cache, "--objective", "pareto", "--front-csv", cache],
    )
    add("outputs", "bench --out onto its --multi-exit", ["bench", "--multi-exit", weights, "--out", weights])
    add(
        "outputs",
        "cache --out onto its --multi-exit",
        ["cache", "--multi-exit", weights, "--data", "synthetic", "--out", weights],
    )
    add(
        "outputs",
        "profile --json onto its model file",
        ["profile", "--model", f"{r}/bad_models.py:Half", "--json", f"{r}/bad_models.py"],
    )
    add(
        "outputs", "study evaluate --cache into the study", ["study", "evaluate", study, "--cache", f"{study}/mine.npz"]
    )
    add("outputs", "search --out /dev/full", ["search", "--cache", cache, "--out", "/dev/full"])
    add("outputs", "search --out, 300-char name", ["search", "--cache", cache, "--out", f"{r}/{'a' * 300}"])
    add(
        "outputs",
        "study build --out a folder of other files",
        ["study", "build", f"{r}/tiny.yaml", "--out", f"{r}/thesis", "--work", f"{r}/w_tiny"],
    )
    add(
        "outputs",
        "study build --work a folder of other files",
        ["study", "build", f"{r}/tiny.yaml", "--work", f"{r}/thesis"],
    )
    add(
        "outputs",
        "study build --out another study",
        ["study", "build", f"{r}/tiny.yaml", "--out", study, "--work", f"{r}/w_tiny"],
    )
    add("outputs", "train --out a built study", ["train", "--stage", "backbone", "--out", study, *train[5:]])
    add(
        "outputs",
        "train into a folder another run holds",
        ["train", "--stage", "backbone", "--out", f"{r}/locked_run", *train[5:]],
        setup=_live_lock,
    )
    model = f"{r}/bad_models.py"
    for name in ("Half", "Pair", "ThreeClasses", "ExitsInForward", "ExitsInInit"):
        add("model code", f"train --stage backbone, {name}", [*train, "--model", f"{model}:{name}"])
        add(
            "model code",
            f"profile, {name}",
            ["profile", "--model", f"{model}:{name}", "--size", "48", "64", "--exits", "2", "--num-classes", "7"],
        )
    for tag, label, change in (
        ("grid", "reversed th_pix grid", "reverse"),
        ("dupes", "duplicate space ids", "dupe"),
        ("zeropix", "all-zero pixels", "zeropix"),
        ("nolabel", "all-zero labels", "nolabel"),
        ("classes", "num_classes 19", "classes"),
        ("size", "input_size 'big'", "size"),
    ):
        add(
            "cache fields",
            f"search, {label}",
            ["search", "--cache", f"{r}/cache_{tag}.npz"],
            setup=lambda root, tag=tag, change=change: damaged_cache(root, tag, change),
        )
    for name in ("latin1", "utf16", "binary", "intkeys", "deep", "folder"):
        add(
            "text files",
            f"study build, {name} YAML",
            ["study", "build", f"{r}/{name}.yaml", "--work", f"{r}/w_{name}", "--out", f"{r}/p_{name}"],
        )
    for name in ("utf16.json", "deep.json", "folder.yaml"):
        add(
            "text files",
            f"export --instance {name}",
            ["export", study, "--instance", f"{r}/{name}", "--onnx", f"{r}/onnx_t"],
        )
    add("text files", "train --weights empty.pt", [*train, "--weights", f"{r}/empty.pt"])
    add("text files", "study check ~nosuchuser", ["study", "check", "~nosuchuser/study"])
    for name, line in (
        ("hugeseed", "seed: 1208925819614629174706176"),
        ("hugecrop", "crop: [1000000000, 1000000000]"),
        ("hugeepochs", "stages: {pretrain: {epochs: 100000000000000000000}}"),
        ("hugeexits", "num_exits: 100000000000000000000"),
    ):
        add(
            "settings",
            f"study build, {line}",
            ["study", "build", f"{r}/{name}.yaml", "--work", f"{r}/w_{name}", "--out", f"{r}/p_{name}"],
            setup=lambda root, name=name, line=line: study_yaml(root, name, line),
        )


def damaged_cache(root: Path, tag: str, change: str) -> None:
    """A copy of the shipped cache with its metadata contradicting its arrays (``save`` does not validate)."""
    import numpy as np

    from mess_core.evaluate.cache import EvaluationCache

    cache = EvaluationCache.load(root / "study" / "val.npz")
    meta = dict(cache.meta)
    if change == "reverse":
        meta["th_pix_grid"] = list(reversed(meta["th_pix_grid"]))
    elif change == "dupe":
        meta["space"] = [meta["space"][1]] + meta["space"][1:]
    elif change == "zeropix":
        cache.pixels = np.zeros_like(cache.pixels)
    elif change == "nolabel":
        cache.label, cache.tp = np.zeros_like(cache.label), np.zeros_like(cache.tp)
    elif change == "classes":
        meta["num_classes"] = 19
    elif change == "size":
        meta["input_size"] = "big"
    cache.meta = meta
    cache.save(root / f"cache_{tag}.npz")


def run_case(case: Case, root: Path) -> Outcome:
    from mess_core.cli import main as cli

    if case.setup:
        case.setup(root)
    before = digest(root)
    err, status = io.StringIO(), ""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            status = str(cli(case.argv))
        except SystemExit as exc:
            status = str(exc.code if isinstance(exc.code, int) else 2)
        except BaseException as exc:  # noqa: BLE001 - the point is to see what escapes
            status = "RAW"
            err.write(f"Traceback (escaped): {type(exc).__name__}: {exc}\n")
    after = digest(root)
    own = tuple(str(root / w) for w in case.writes)
    changed = sorted(
        p
        for p in set(before) | set(after)
        if before.get(p) != after.get(p) and not str(root / p).startswith(own) and not _created_output(root / p, case)
    )
    text = err.getvalue().strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return Outcome(case, status, len(lines), "Traceback" in text, changed, lines[0] if lines else "")


def _created_output(path: Path, case: Case) -> bool:
    """A file the case's own output argument named, which a successful case may write."""
    return case.expect == (0,) and str(path) in case.argv


def upload_bomb(root: Path) -> str:
    from app.views.upload import decode_image
    from mess_core.errors import MessError

    try:
        decode_image((root / "bomb.png").read_bytes(), name="bomb.png")
    except MessError as exc:
        return f"2 (ImageError) {exc}"
    except Exception as exc:  # noqa: BLE001
        return f"RAW {type(exc).__name__}: {exc}"
    return "0 decoded a 40000x40000 header"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="use (and keep) this scratch folder instead of a temporary one")
    parser.add_argument("--only", help="run only the cases whose name contains this word")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from mess_core.deploy.bench import machine

    root = Path(args.keep or tempfile.mkdtemp(prefix="fault_sweep_"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prepare(root)
    print(f"machine: {machine()}; scratch folder {root}")
    results = [run_case(c, root) for c in cases(root) if not args.only or args.only in c.name]
    group = ""
    for res in results:
        if res.case.group != group:
            group = res.case.group
            print(f"\n## {group}\n| case | exit | lines | trace | changed | message |\n|---|---|---|---|---|---|")
        flag = "" if res.handled else " **NOT HANDLED**"
        message = res.message.replace(str(root), "<tmp>").replace("|", "/")[:110]
        print(
            f"| {res.case.name.replace(str(root), '<tmp>')}{flag} | {res.status} | {res.lines} | "
            f"{'yes' if res.trace else 'no'} | {', '.join(res.changed) or '-'} | {message} |"
        )
    print(f"\nupload of a PNG declaring 40000x40000 pixels: {upload_bomb(root).replace(str(root), '<tmp>')[:140]}")
    bad = [r for r in results if not r.handled]
    print(
        f"\n{len(results)} cases in {time.perf_counter() - t0:.0f} s: {len(results) - len(bad)} handled, "
        f"{len(bad)} not handled" + (f" ({', '.join(r.case.name for r in bad)})" if bad else "")
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
