import os
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from mess_core.models.trust import KEY_ENV

# torchvision and timm warn about deprecated arguments of their own; they are not ours to fix.
warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    # the suite signs what it builds with a key of its own (mess_core.models.trust), never the user's, and every
    # process it starts (CLI runs, the app server) uses the same one
    os.environ[KEY_ENV] = str(Path(tempfile.mkdtemp(prefix="mess-trust-")) / "trust.key")


TINY_STUDY = """\
name: tiny
description: a study small enough to build inside the test suite
model: mobilenetv2_fcn
data_options: {size: [48, 64], length: 10}
crop: [48, 64]
exit_space: crm25p-b0-fcn,nocrm-b0-fcn
batch_size: 5
stages:
  backbone: {epochs: 1}
  pretrain: {epochs: 1}
  exits: {epochs: 1}
latency: false
variants:
  ce: {exit_loss: ce}
  pfd: {exit_loss: pfd}
  pfd-no-stage1: {exit_loss: pfd, init: backbone}
variant_space: crm25p-b0-fcn
bench_images: 4
bench_batches: [1, 2]
bench_repeats: 1
heavy_configs: [nocrm-b0-fcn]
"""


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """A real study built by the engine's command on a few generated scenes: (config, work folder, study folder,
    log)."""
    from mess_core.study import build

    root = tmp_path_factory.mktemp("study")
    config = root / "tiny.yaml"
    config.write_text(TINY_STUDY)
    lines: list[str] = []
    out = build(config, work=root / "work", out=root / "precomputed" / "tiny", log=lines.append)
    return config, root / "work", out, lines
