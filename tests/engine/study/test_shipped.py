"""Every shipped study is what its manifest says and what its weights compute."""

import pytest

from mess_core.study import DEFAULT_STUDY, StudyConfig, list_studies, open_study
from tests.paths import PRECOMPUTED, REPO

STUDIES = list_studies(PRECOMPUTED)


def test_a_default_study_is_shipped():
    assert DEFAULT_STUDY in [p.name for p in STUDIES]


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_files_match_the_manifest(path):
    assert open_study(path).verify() == []


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_cache_agrees_with_rerunning_the_weights_on_a_few_images(path):
    study = open_study(path)
    cfg = StudyConfig.from_yaml(path / "study.yaml")
    root = None if cfg.data_root is None else (REPO / cfg.data_root).resolve()
    if root is not None and not root.is_dir():
        pytest.skip(f"the {cfg.dataset} data is not on this machine ({root})")
    assert study.check_weights(images=3, data_root=root) == []
