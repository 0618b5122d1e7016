"""Studies: a trained multi-exit network with everything the app and a reader need to judge it, built by one
reproducible command from a YAML file and opened again without re-running anything.

A study folder (``precomputed/<name>/``) holds

* ``multi_exit.pt``: the backbone and every exit head, in float16 (loading widens them back to float32);
* ``<selection>.npz``: the evaluation cache of the images thresholds were tuned on (``val``, or ``train-0006R0``
  for CamVid's frames of drive 0006R0), and of the report images when the dataset has them;
* ``results.json``: the seed-shaped results table of every mode, each row with its id, label and instance;
* ``fronts.json``: the accuracy-vs-GFLOPs fronts of every mode and peer;
* ``profile.json``: the per-node workload profile and where the exits sit;
* ``study.yaml``: the configuration it was built from; ``manifest.json``: format, command, package versions, machine,
  wall time of each step and the SHA-256 of every file.

:func:`build` runs the steps in a work folder (backbone, stage 1, stage 2, cache, search) and skips what is already
done, so an interrupted build continues where it stopped; the study folder itself is written to a temporary folder
and renamed, so it is either complete or absent.

Modules: :mod:`.config` (what a study is built from, its file names), :mod:`.protocol` (which groups fed which
step; no tuning on training scenes), :mod:`.steps` (numbered, timed steps), :mod:`.build` (the steps of a build),
:mod:`.pack` (weights, tables and hashes as files), :mod:`.folder` (opening a study), :mod:`.evaluate` (a study, as
shipped, on other labelled images). A study's tables and headline are :mod:`mess_core.search.report`'s, re-exported here
for those who read them off a study.

Example:
    >>> from mess_core.study import StudyConfig
    >>> cfg = StudyConfig.from_dict({"name": "demo", "model": "mobilenetv2_fcn", "crop": [96, 128]})
    >>> cfg.name, cfg.stage_fields("exits")["exit_loss"]
    ('demo', 'pfd')
"""

from .build import build
from .config import DEFAULT_STUDY, STAGES, STUDY_FORMAT, StudyConfig, StudyError
from .folder import Study, list_studies, open_study
from .report import (
    TARGETS,
    Target,
    end_to_end_table,
    headline,
    headline_figures,
    markdown_report,
    policy_comparison,
)

__all__ = [
    "StudyError",
    "StudyConfig",
    "Study",
    "build",
    "list_studies",
    "open_study",
    "STUDY_FORMAT",
    "DEFAULT_STUDY",
    "STAGES",
    "end_to_end_table",
    "policy_comparison",
    "Target",
    "TARGETS",
    "headline_figures",
    "headline",
    "markdown_report",
]
