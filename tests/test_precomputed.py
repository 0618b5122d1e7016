"""Every shipped study is what its manifest says and what its weights compute."""

import numpy as np
import pytest

from mess_core.cache import build_cache
from mess_core.data import build_dataset, eval_transform
from mess_core.study import StudyConfig, list_studies, open_study

from .paths import PRECOMPUTED, REPO

STUDIES = list_studies(PRECOMPUTED)


def test_a_default_study_is_shipped():
    assert "synthetic-mobilenetv2-fcn" in [p.name for p in STUDIES]


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_files_match_the_manifest(path):
    assert open_study(path).verify() == []


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_cache_agrees_with_rerunning_the_weights_on_a_few_images(path):
    study = open_study(path)
    cfg = StudyConfig.from_yaml(path / "study.yaml")
    root = cfg.data_root if cfg.data_root is None else str((REPO / cfg.data_root).resolve())
    if root is not None and not (REPO / cfg.data_root).is_dir():
        pytest.skip(f"the {cfg.dataset} data is not on this machine ({root})")
    data = build_dataset(cfg.dataset, root=root, split=cfg.cache_split,
                         transform=eval_transform(size=tuple(cfg.eval_size or cfg.crop)), **cfg.data_options)
    net, _ = study.load_network()
    again = build_cache(net, data, model=cfg.model, dataset_name=cfg.dataset, split=cfg.cache_split, batch_size=1,
                        limit=3)
    shipped = study.cache
    np.testing.assert_array_equal(again.label, shipped.label[:3])
    # the build ran batch 8: convolutions may round differently at batch 1, a tie may flip a pixel or two
    assert np.abs(again.tp - shipped.tp[:3]).sum() <= 0.001 * shipped.pixels[:3].sum() * shipped.num_heads
    np.testing.assert_allclose(again.stage_gflops, shipped.stage_gflops, rtol=1e-9)
    np.testing.assert_allclose(again.head_gflops, shipped.head_gflops, rtol=1e-9)
