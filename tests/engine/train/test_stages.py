"""The three training stages on synthetic data with tiny models, single-process (see test_distributed.py for DDP)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from mess_core import checkpoint
from mess_core.conversion.pipeline import convert
from mess_core.data import SyntheticSegmentation, eval_transform, train_transform
from mess_core.deploy import artifacts
from mess_core.errors import TrainingError
from mess_core.train import TrainConfig, build_datasets, exits_due, fit, train
from mess_core.train.distributed import setup
from mess_core.train.losses import ExitLoss, ce_map
from mess_core.train.run import class_weights
from mess_core.train.tasks import ExitsTask
from tests.paths import folder_digest
from tests.user_models import TinyUNet

SIZE = (48, 64)
QUIET = dict(progress=False, workers=0)


def config(tmp_path, stage, name="run", **kw):
    base = dict(
        stage=stage,
        out=str(tmp_path / name),
        dataset="synthetic",
        crop=SIZE,
        batch_size=4,
        epochs=2,
        train_limit=16,
        val_limit=8,
        num_exits=3,
        optimizer="adamw",
        lr=3e-3,
        lr_schedule="constant",
        data_options={"size": SIZE, "length": 32},
        **QUIET,
    )
    base.update(kw)
    return TrainConfig(**base)


def silent(_msg):
    pass


def tiny(num_classes=7):
    """TinyUNet with the same initial weights on every call (runs compared with each other must start equal)."""
    torch.manual_seed(0)
    return TinyUNet(num_classes=num_classes)


def losses(history):
    return [row["loss"] for row in history if "loss" in row]


def test_exit_schedule_weights_shallow_exits_most_often():
    counts = [0] * 5
    for step in range(1, 61):
        for i in exits_due(step, 5):
            counts[i - 1] += 1
    assert counts == [60, 30, 20, 15, 12]
    assert exits_due(7, 5, "every") == (1, 2, 3, 4, 5)


def test_backbone_stage_lowers_the_loss_and_writes_its_run_directory(tmp_path):
    cfg = config(tmp_path, "backbone", epochs=3)
    out = train(cfg, model=tiny(SyntheticSegmentation(split="train").info.num_classes), log=silent)
    loss = losses(out["history"])
    assert loss[-1] < loss[0]
    run = tmp_path / "run"
    for name in ("config.yaml", "checkpoint.pt", "metrics.csv", "eval.json", "model.pt", "summary.json"):
        assert (run / name).is_file(), name
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "images_per_s" in header and "miou_final" in header
    assert 0.0 <= out["history"][-1]["miou_final"] <= 1.0


def test_pretrain_lowers_the_loss_and_reports_the_final_exit_before_and_after(tmp_path):
    cfg = config(tmp_path, "pretrain", epochs=3)
    out = train(cfg, model=tiny(), log=silent)
    history = out["history"]
    assert history[0]["epoch"] == 0 and "loss" not in history[0]  # the evaluation before training
    assert {"miou_exit1", "miou_exit2", "miou_final"} <= set(history[-1])
    loss = losses(history)
    assert loss[-1] < loss[0]
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert "final_miou_before" in summary and "final_miou_after" in summary
    # the pre-training exits are discarded: model.pt loads into the plain model
    model, meta = artifacts.load_model(tmp_path / "run" / "model.pt", TinyUNet(num_classes=7))
    assert meta["stage"] == "pretrain"


def test_exit_stage_trains_every_head_from_one_backbone_pass_and_leaves_the_backbone_bit_identical(tmp_path):
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_set, val_set = build_datasets(config(tmp_path, "exits"))
    net = convert(model.eval(), torch.zeros(1, 3, *SIZE), num_exits=3, exit_head=None)
    specs = ["nocrm-b0-fcn", "crm50p-b1-rdi-fcn", "crm25p-b2-deeplab"]
    net.attach(specs)
    heads_before = {k: v.clone() for k, v in net.heads.state_dict().items()}
    calls = {"backbone": 0, "heads": 0}
    net.stages[0].register_forward_hook(lambda *a: calls.__setitem__("backbone", calls["backbone"] + 1))
    for bank in net.heads.values():
        for head in bank.values():
            head.register_forward_hook(lambda *a: calls.__setitem__("heads", calls["heads"] + 1))
    task = ExitsTask(
        net, exit_loss=ExitLoss("pfd"), ignore_index=train_set.info.ignore_index, class_names=train_set.info.classes
    )
    cfg = config(tmp_path, "exits", epochs=3)
    out = fit(
        task,
        config=cfg,
        env=setup("cpu"),
        train_set=train_set,
        val_set=None,
        run_dir=tmp_path / "run",
        ignore_index=train_set.info.ignore_index,
        log=silent,
    )
    steps = 3 * (16 // 4)
    assert calls["backbone"] == steps  # never once per head
    assert calls["heads"] == steps * len(specs) * 2
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the frozen backbone changed"
    changed = [k for k, v in net.heads.state_dict().items() if not torch.equal(v, heads_before[k])]
    assert any(k.startswith("1.") for k in changed) and any(k.startswith("2.") for k in changed)
    loss = losses(out["history"])
    assert loss[-1] < loss[0]


def test_exit_stage_command_path_writes_a_multi_exit_file_that_rebuilds(tmp_path):
    cfg = config(
        tmp_path,
        "exits",
        model="mobilenetv3_lraspp",
        exit_space="nocrm-b0-fcn,crm25p-b1-fcn",
        epochs=1,
        train_limit=8,
        val_limit=4,
    )
    out = train(cfg, log=silent)
    net, meta = artifacts.load_multi_exit(out["result"])
    assert meta["exit_space"]["1"] == ["nocrm-b0-fcn", "crm25p-b1-fcn"]
    x = torch.randn(2, 3, *SIZE)
    trained = out["net"].eval()
    with torch.no_grad():
        a, fa = trained.forward_all(x)
        b, fb = net.forward_all(x)
    assert torch.allclose(fa, fb, atol=1e-5)
    assert all(torch.allclose(a[i][s], b[i][s], atol=1e-5) for i in a for s in a[i])


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    # no BatchNorm and no dropout: then 2 x 2 accumulated images must give exactly the 4-image gradient
    def plain():
        torch.manual_seed(1)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 7, 3, padding=1))

    results = []
    for name, batch, accumulate in (("big", 4, 1), ("acc", 2, 2)):
        cfg = config(
            tmp_path, "backbone", name=name, batch_size=batch, accumulate=accumulate, epochs=2, optimizer="sgd", lr=0.05
        )
        model = plain()
        out = train(cfg, model=model, log=silent)
        results.append((model.state_dict(), losses(out["history"])))
    (wa, la), (wb, lb) = results
    assert la == pytest.approx(lb, rel=1e-5)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_bf16_autocast_runs_on_cpu(tmp_path):
    cfg = config(tmp_path, "backbone", precision="bf16", epochs=1, train_limit=8, val_limit=4)
    out = train(cfg, model=tiny(), log=silent)
    assert math.isfinite(losses(out["history"])[0])


def test_fp16_without_cuda_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(TrainingError, match="fp16 needs a CUDA device"):
        train(config(tmp_path, "backbone", precision="fp16", epochs=1), model=tiny(), log=silent)


class _PoisonedAfter(torch.utils.data.Dataset):
    """Synthetic data whose images turn to NaN from ``epoch`` on: a run that diverges in its second epoch."""

    def __init__(self, base, epoch):
        self.base, self.poison_epoch, self.epoch, self.info = base, epoch, 0, base.info

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, mask = self.base[i]
        return (image * float("nan") if self.epoch >= self.poison_epoch else image), mask


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    base = SyntheticSegmentation(
        split="train",
        size=SIZE,
        length=16,
        transform=train_transform(crop=SIZE, ignore_index=SyntheticSegmentation(split="train").info.ignore_index),
    )
    val = SyntheticSegmentation(split="val", size=SIZE, length=4, transform=eval_transform())
    cfg = config(tmp_path, "backbone", epochs=3)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2.*still holds .*epoch 1"):
        train(cfg, model=tiny(), datasets=(_PoisonedAfter(base, 2), val), log=silent)
    state = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["module"].values() if v.is_floating_point())


def test_a_new_run_refuses_to_overwrite_an_existing_one(tmp_path):
    cfg = config(tmp_path, "backbone", epochs=1, train_limit=4, val_limit=2)
    train(cfg, model=tiny(), log=silent)
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg, model=tiny(), log=silent)


def test_resume_continues_to_the_same_result_as_an_uninterrupted_run(tmp_path):
    full = config(tmp_path, "pretrain", name="full", epochs=3)
    train(full, model=tiny(), log=silent)
    part = config(tmp_path, "pretrain", name="part", epochs=1)
    train(part, model=tiny(), log=silent)
    resumed = config(tmp_path, "pretrain", name="part", epochs=3)
    out = train(resumed, model=tiny(), resume=True, log=silent)
    a = checkpoint.load(tmp_path / "full" / "checkpoint.pt")
    b = checkpoint.load(tmp_path / "part" / "checkpoint.pt")
    assert b["epoch"] == 3 and len(out["history"]) == 4
    assert all(torch.equal(a["module"][k], b["module"][k]) for k in a["module"])
    assert [r.get("loss") for r in a["history"]] == [r.get("loss") for r in b["history"]]


def test_a_weight_average_leaves_training_alone_becomes_the_result_and_resumes_exactly(tmp_path):
    plain = config(tmp_path, "pretrain", name="plain", epochs=2)
    train(plain, model=tiny(), log=silent)
    averaged = config(tmp_path, "pretrain", name="ema", epochs=2, ema=0.5)
    out = train(averaged, model=tiny(), log=silent)
    part = config(tmp_path, "pretrain", name="part", epochs=1, ema=0.5)
    train(part, model=tiny(), log=silent)
    train(config(tmp_path, "pretrain", name="part", epochs=2, ema=0.5), model=tiny(), resume=True, log=silent)
    a, b = (checkpoint.load(tmp_path / name / "checkpoint.pt") for name in ("plain", "ema"))
    # the optimiser's own weights follow the same path with or without an average beside them
    assert all(torch.equal(a["module"][k], b["module"][k]) for k in a["module"])
    average = {k.removeprefix("module.net."): v for k, v in b["ema"].items() if k.startswith("module.net.")}
    own = {k.removeprefix("net."): v for k, v in b["module"].items() if k.startswith("net.")}
    result = out["net"].state_dict()
    weights = [k for k in result if k.endswith("weight")]
    assert weights and all(torch.equal(result[k], average[k]) for k in weights)
    assert not all(torch.equal(result[k], own[k]) for k in weights)  # the result is the average, not the last step
    heads = checkpoint.load(tmp_path / "ema" / "model.pt")["heads"]  # and so is what model.pt keeps
    assert all(torch.equal(v, average[f"heads.{k}"]) for k, v in heads.items())
    c = checkpoint.load(tmp_path / "part" / "checkpoint.pt")
    assert all(torch.equal(b["ema"][k], c["ema"][k]) for k in b["ema"])
    assert out["history"][-1]["miou_final"] == c["history"][-1]["miou_final"]
    with pytest.raises(TrainingError, match="ema"):
        config(tmp_path, "pretrain", ema=1.0)


def test_a_short_run_on_a_longer_schedule_is_the_exact_start_of_the_long_run(tmp_path):
    poly = dict(lr_schedule="poly", train_limit=12, val_limit=2)  # 3 steps: the third sees the second step's lr
    long = train(config(tmp_path, "backbone", name="long", epochs=2, **poly), model=tiny(), log=silent)
    short = train(
        config(tmp_path, "backbone", name="short", epochs=1, schedule_epochs=2, **poly), model=tiny(), log=silent
    )
    alone = train(config(tmp_path, "backbone", name="alone", epochs=1, **poly), model=tiny(), log=silent)
    first = [(r["lr"], r["loss"]) for r in long["history"] if "loss" in r][:1]
    assert [(r["lr"], r["loss"]) for r in short["history"] if "loss" in r] == first
    # a one-epoch schedule decays to zero within the epoch: a different run
    assert losses(alone["history"]) != losses(short["history"])
    with pytest.raises(TrainingError, match="schedule_epochs"):
        config(tmp_path, "backbone", epochs=3, schedule_epochs=2)


def test_resuming_a_finished_run_evaluates_its_final_weights_when_that_was_not_written(tmp_path):
    cfg = config(tmp_path, "backbone", epochs=1, train_limit=4, val_limit=2)
    train(cfg, model=tiny(), log=silent)
    evaluation = tmp_path / "run" / "eval.json"
    before = json.loads(evaluation.read_text())
    evaluation.unlink()
    out = train(cfg, model=tiny(), resume=True, log=silent)
    assert json.loads(evaluation.read_text()) == before
    assert out["detail"]


# ------------------------------------------------------------------------------------------------ stage 2 at scale
HALVING_SPACE = "nocrm-b0-fcn,crm50p-b1-rdi-fcn,crm25p-b2-deeplab,nocrm-b2-deeplab"


def test_successive_halving_stops_dominated_heads_and_every_head_learns_as_if_trained_alone(tmp_path):
    cfg = config(
        tmp_path,
        "exits",
        name="all",
        epochs=3,
        lr_schedule="poly",
        exit_space=HALVING_SPACE,
        prune_at=(1,),
        prune_margin=(0.5,),
    )
    out = train(cfg, model=tiny(), log=silent)
    detail = json.loads((tmp_path / "all" / "eval.json").read_text())
    stopped = detail["stopped"]
    # the rung's own evaluation file already says what it stopped
    assert checkpoint.load(tmp_path / "all" / "checkpoint.pt")["task"]["stopped"] == stopped
    assert stopped and len(stopped) < 2 * 4, "the rung should stop some heads and keep others"
    assert [r["heads_training"] for r in out["history"]] == [8, 8 - len(stopped), 8 - len(stopped)]
    rung = detail["halving"][0]
    assert rung["epoch"] == 1 and {(h["exit"], h["config"]) for h in rung["heads"] if h["stopped"]} == {
        (int(k.split(":")[0]), k.split(":")[1]) for k in stopped
    }
    net = out["net"]
    for spec in HALVING_SPACE.split(","):
        for epochs in (1, 3):
            alone = train(
                config(
                    tmp_path,
                    "exits",
                    name=f"{spec}-{epochs}",
                    epochs=epochs,
                    schedule_epochs=3,
                    lr_schedule="poly",
                    exit_space=spec,
                ),
                model=tiny(),
                log=silent,
            )["net"]
            for index in (1, 2):
                if (1 if f"{index}:{spec}" in stopped else 3) != epochs:
                    continue
                a = net.heads[str(index)][spec].state_dict()
                b = alone.heads[str(index)][spec].state_dict()
                assert all(torch.equal(a[k], b[k]) for k in a), f"exit {index} {spec} trained {epochs} epochs"
                # a stopped head is reported with its evaluation from when it stopped
                assert detail["exits"][str(index)][spec]["miou"] == pytest.approx(
                    json.loads((tmp_path / f"{spec}-{epochs}" / "eval.json").read_text())["exits"][str(index)][spec][
                        "miou"
                    ]
                )


def test_a_resumed_halving_run_ends_where_an_uninterrupted_one_does(tmp_path):
    common = dict(lr_schedule="poly", exit_space=HALVING_SPACE, prune_at=(1,), prune_margin=(0.5,), schedule_epochs=3)
    train(config(tmp_path, "exits", name="full", epochs=3, **common), model=tiny(), log=silent)
    train(config(tmp_path, "exits", name="part", epochs=2, **common), model=tiny(), log=silent)
    train(config(tmp_path, "exits", name="part", epochs=3, **common), model=tiny(), resume=True, log=silent)
    a = checkpoint.load(tmp_path / "full" / "checkpoint.pt")
    b = checkpoint.load(tmp_path / "part" / "checkpoint.pt")
    assert a["task"]["stopped"] and a["task"] == b["task"]
    assert all(torch.equal(a["module"][k], b["module"][k]) for k in a["module"])


def test_halving_settings_are_checked_before_training():
    with pytest.raises(TrainingError, match="one margin per epoch"):
        TrainConfig(stage="exits", out=".", epochs=4, prune_at=(1, 2), prune_margin=(1.0,))
    with pytest.raises(TrainingError, match="increasing epochs before the last"):
        TrainConfig(stage="exits", out=".", epochs=4, prune_at=(4,), prune_margin=(1.0,))
    with pytest.raises(TrainingError, match="applies to stage 2"):
        TrainConfig(stage="backbone", out=".", epochs=4, prune_at=(1,), prune_margin=(1.0,))


def test_class_weights_follow_median_frequency_balancing_on_the_raw_labels():
    data = SyntheticSegmentation(split="train", size=SIZE, length=12)
    k, ignore = data.info.num_classes, data.info.ignore_index
    pixels, seen = np.zeros(k), np.zeros(k)
    for i in range(len(data)):
        mask = data.raw(i)[1]
        counts = np.bincount(mask[mask != ignore].ravel(), minlength=k)[:k]
        pixels += counts
        seen += (counts > 0) * mask.size
    freq = pixels / np.maximum(seen, 1)
    expected = np.where(pixels > 0, (np.median(freq[pixels > 0]) / np.maximum(freq, 1e-12)) ** 0.5, 1.0)
    assert class_weights(data, data.info, 0.5).numpy() == pytest.approx(expected, rel=1e-5)
    assert class_weights(data, data.info, 0.0).numpy() == pytest.approx(np.ones(k))


def test_class_balanced_losses_weigh_each_pixel_by_its_label(tmp_path):
    weights = torch.tensor([1.0, 3.0, 0.5])
    logits, teacher = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0, 0, 0] = 255
    plain = ce_map(logits, labels, ignore_index=255)
    weighted = ce_map(logits, labels, ignore_index=255, class_weights=weights)
    per_pixel = weights[labels.clamp(max=2)] * (labels != 255)
    assert torch.allclose(weighted, plain * per_pixel, atol=1e-6)
    loss = ExitLoss("pfd", alpha=0.5)
    balanced = loss.sum(logits, loss.targets(teacher, labels, ignore_index=255, class_weights=weights))
    expected = (loss(logits, teacher, labels, ignore_index=255) * per_pixel).sum()
    assert balanced.item() == pytest.approx(expected.item(), rel=1e-5)
    # and a whole run takes them from the training split
    cfg = config(tmp_path, "backbone", epochs=1, train_limit=8, val_limit=4, class_balance=1.0)
    messages = []
    train(cfg, model=tiny(), log=messages.append)
    assert any(m.startswith("class weights (median-frequency balancing ** 1.0)") for m in messages)


def test_stage_2_can_start_stage_1s_configuration_from_stage_1s_exits(tmp_path):
    out = train(config(tmp_path, "pretrain", name="pre", epochs=1), model=tiny(), log=silent)
    kept = {k: v.clone() for k, v in out["net"].heads.state_dict().items()}
    model_pt = tmp_path / "pre" / "model.pt"
    _, meta = artifacts.load_model(model_pt, TinyUNet(num_classes=7))
    assert meta["exits"]["exit_space"]["1"] == ["nocrm-b0-fcn"]
    net = convert(tiny().eval(), torch.zeros(1, 3, *SIZE), num_exits=3, exit_head=None)
    net.attach(["crm25p-b0-fcn", "nocrm-b0-fcn"], seed=0)
    assert artifacts.load_exit_heads(model_pt, net) == [(1, "nocrm-b0-fcn"), (2, "nocrm-b0-fcn")]
    for index in ("1", "2"):
        now = net.heads[index]["nocrm-b0-fcn"].state_dict()
        assert all(torch.equal(now[k], kept[f"{index}.nocrm-b0-fcn.{k}"]) for k in now)
    messages = []
    train(
        config(
            tmp_path,
            "exits",
            name="exits",
            epochs=1,
            init=str(model_pt),
            init_exits=True,
            exit_space="crm25p-b0-fcn,nocrm-b0-fcn",
        ),
        model=TinyUNet(num_classes=7),
        log=messages.append,
    )
    assert any(m.startswith("heads started from stage 1's exits: 1:nocrm-b0-fcn, 2:nocrm-b0-fcn") for m in messages)
    # a plain backbone keeps no exits, and the setting needs a stage-1 file to start from
    plain = tmp_path / "plain"
    train(config(tmp_path, "backbone", name="plain", epochs=1, train_limit=4, val_limit=2), model=tiny(), log=silent)
    with pytest.raises(TrainingError, match="keeps no exit heads"):
        artifacts.load_exit_heads(plain / "model.pt", net)
    with pytest.raises(TrainingError, match="init_exits applies to stage 2"):
        config(tmp_path, "backbone", init_exits=True)
    with pytest.raises(TrainingError, match="give the stage-1 model.pt as init"):
        train(config(tmp_path, "exits", name="no-init", init_exits=True), model=tiny(), log=silent)


# ------------------------------------------------------------------------------------- resume where the run now is
def test_resuming_a_copied_run_writes_only_into_the_copy_and_ends_like_resuming_in_place(tmp_path):
    import shutil

    from mess_core.train import load_run_config

    train(config(tmp_path, "backbone", name="orig", epochs=1), model=tiny(), log=silent)
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    shutil.copytree(tmp_path / "orig", tmp_path / "inplace")
    before = folder_digest(tmp_path / "orig")

    def resume(folder):
        cfg = load_run_config(folder)
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "epochs": 2})
        return train(cfg, model=tiny(), resume=True, log=silent)

    copied = resume(tmp_path / "copy")
    assert folder_digest(tmp_path / "orig") == before  # the original is untouched
    assert copied["result"] == tmp_path / "copy" / "model.pt"
    # the reference: a run resumed in place (its config names its own folder)
    inplace = train(
        TrainConfig.from_dict({**config(tmp_path, "backbone", name="inplace").to_dict(), "epochs": 2}),
        model=tiny(),
        resume=True,
        log=silent,
    )
    a = checkpoint.load(tmp_path / "copy" / "checkpoint.pt")
    b = checkpoint.load(tmp_path / "inplace" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["module"][k], b["module"][k]) for k in b["module"])
    assert losses(copied["history"]) == losses(inplace["history"])
    assert load_run_config(tmp_path / "copy").out == str(tmp_path / "copy")


def test_resuming_a_moved_run_works_where_it_is_and_creates_nothing_at_the_old_path(tmp_path):
    from mess_core.train import load_run_config

    init = tmp_path / "old" / "start.pt"  # a recorded path inside the run folder moves with it
    train(config(tmp_path, "backbone", name="old", epochs=1), model=tiny(), log=silent)
    torch.save({"model": tiny().state_dict()}, init)
    cfg_file = tmp_path / "old" / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("init: null", f"init: {init}"))
    (tmp_path / "old").rename(tmp_path / "new")
    cfg = load_run_config(tmp_path / "new")
    assert cfg.out == str(tmp_path / "new") and cfg.init == str(tmp_path / "new" / "start.pt")
    out = train(
        TrainConfig.from_dict({**cfg.to_dict(), "init": None, "epochs": 2}), model=tiny(), resume=True, log=silent
    )
    assert not (tmp_path / "old").exists()
    assert checkpoint.load(tmp_path / "new" / "checkpoint.pt")["epoch"] == 2 and len(losses(out["history"])) == 2


def test_resuming_with_a_lower_lr_scales_the_schedule_from_where_it_was(tmp_path):
    from mess_core.train import load_run_config

    poly = dict(lr_schedule="poly", train_limit=8, val_limit=2)
    train(config(tmp_path, "backbone", name="run", epochs=1, schedule_epochs=3, **poly), model=tiny(), log=silent)
    lr_after_one = checkpoint.load(tmp_path / "run" / "checkpoint.pt")["optimizer"]["param_groups"][0]["lr"]
    cfg = load_run_config(tmp_path / "run", epochs=2, lr=3e-4)  # a tenth of the stored 3e-3
    assert cfg.lr == 3e-4 and cfg.epochs == 2
    lines = []
    out = train(cfg, model=tiny(), resume=True, log=lines.append)
    assert any("learning rate 0.003 -> 0.0003" in line for line in lines)
    second = [r["lr"] for r in out["history"] if "loss" in r][-1]
    assert second == pytest.approx(lr_after_one / 10, rel=1e-6)  # the same point of the schedule, a tenth as large


def test_the_cli_resume_takes_only_the_settings_a_run_may_change(tmp_path, capsys):
    from mess_core.cli import main

    train(config(tmp_path, "backbone", name="run", epochs=1, train_limit=4, val_limit=2), model=tiny(), log=silent)
    before = folder_digest(tmp_path / "run")
    assert main(["train", "--resume", "--out", str(tmp_path / "run"), "--batch-size", "2", "--crop", "32x32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch_size, crop" in err[0] and "epochs, lr, device" in err[0]
    assert folder_digest(tmp_path / "run") == before


# ------------------------------------------------------------------------------ a non-finite state is never written
def _poison_bn_after(model, calls):
    """Put an infinity into the first BatchNorm's running_var after ``calls`` training forwards."""
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    seen = [0]

    def hook(module, _inputs):  # before the forward, which then updates the (now infinite) statistic in place
        if module.training:
            seen[0] += 1
            if seen[0] > calls:
                module.running_var[0] = float("inf")

    bn.register_forward_pre_hook(hook)
    return model, next(n for n, m in model.named_modules() if m is bn)


def _all_finite(path):
    state = checkpoint.load(path)

    def walk(value):
        if isinstance(value, torch.Tensor):
            return not value.is_floating_point() or bool(torch.isfinite(value).all())
        if isinstance(value, dict):
            return all(walk(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return all(walk(v) for v in value)
        return True

    return walk(state)


def test_a_non_finite_buffer_stops_the_run_names_the_tensor_and_no_written_file_holds_it(tmp_path):
    cfg = config(tmp_path, "backbone", epochs=3)  # 16 images / 4 = 4 steps per epoch
    model, bn_name = _poison_bn_after(tiny(), 4)
    with pytest.raises(
        TrainingError,
        match=rf"diverged in epoch 2: .*{bn_name}\.running_var \(inf\).*epoch 1.*"
        r"Lower the learning rate.*resume from the last checkpoint",
    ):
        train(cfg, model=model, log=silent)
    run = tmp_path / "run"
    assert checkpoint.load(run / "checkpoint.pt")["epoch"] == 1 and _all_finite(run / "checkpoint.pt")
    assert not (run / "model.pt").exists()


def test_a_diverging_run_exits_non_zero_from_the_command_line_with_the_tensor_named(tmp_path, monkeypatch, capsys):
    import mess_core.cli.train as cli_train
    from mess_core.cli import main

    real = cli_train.train

    def with_poisoned_model(cfg, **kw):  # the command line, with a tiny model that diverges in its first epoch
        return real(cfg, model=_poison_bn_after(tiny(), 1)[0], **kw)

    monkeypatch.setattr(cli_train, "train", with_poisoned_model)
    out = tmp_path / "cli"
    code = main(
        [
            "train",
            "--stage",
            "backbone",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--train-limit",
            "8",
            "--val-limit",
            "2",
            "--no-progress",
            "--workers",
            "0",
            "--data-option",
            "size=[48,64]",
            "--data-option",
            "length=16",
            "--crop",
            "48x64",
        ]
    )
    assert code != 0
    err = capsys.readouterr().err
    assert "running_var (inf)" in err and "diverged in epoch 1" in err
    assert not (out / "checkpoint.pt").exists() and not (out / "model.pt").exists()
