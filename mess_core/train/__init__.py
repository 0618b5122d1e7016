"""MESS training in plain PyTorch: train a backbone, exit-aware pre-training (stage 1), and training every exit
configuration on the frozen backbone with Positive Filtering Distillation (stage 2); one process or many.

Example (two tiny epochs of each stage on the synthetic dataset):
    >>> import tempfile
    >>> from mess_core.train import TrainConfig, train
    >>> out = tempfile.mkdtemp()
    >>> common = dict(model="resnet18_fcn", crop=(48, 64), batch_size=4, epochs=1, train_limit=8, val_limit=4,
    ...               workers=0, num_exits=3, progress=False, data_options={"size": (48, 64)})
    >>> r = train(TrainConfig(stage="pretrain", out=f"{out}/pre", **common), log=lambda m: None)
    >>> space = "nocrm-b0-fcn,crm25p-b1-rdi-deeplab"
    >>> r = train(TrainConfig(stage="exits", out=f"{out}/exits", init=f"{out}/pre/model.pt", exit_space=space,
    ...                       **common), log=lambda m: None)
    >>> r["result"].name, sorted(r["net"].heads["1"])
    ('multi_exit.pt', ['crm25p-b1-rdi-deeplab', 'nocrm-b0-fcn'])
"""

from .config import STAGES, TrainConfig
from .loop import fit
from .run import build_datasets, build_task, exit_space, load_run_config, train
from .tasks import BackboneTask, ExitsTask, PretrainTask, exits_due

__all__ = [
    "TrainConfig",
    "STAGES",
    "train",
    "fit",
    "build_datasets",
    "build_task",
    "exit_space",
    "load_run_config",
    "BackboneTask",
    "PretrainTask",
    "ExitsTask",
    "exits_due",
]
