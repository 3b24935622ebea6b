"""Recipes on toy inputs: heads on synthetic cached features (subsets, repetition, calibration, reuse),
the strong recipe's pieces, end-to-end training's model, and the recipes' run keys."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from studylib import config, data, models
from studylib.data.preprocess import Normalize
from studylib.models import backbones
from studylib.models.strong import init_whitening
from studylib.recipes import features, finetune, heads, scratch, strong


def fake_features(n_train_per_class=20, n_test_per_class=10, dim=1280, seed=0) -> heads.Features:
    """Cached features where class c is a noisy copy of a random prototype: a linear head can learn them."""
    gen = torch.Generator().manual_seed(seed)
    protos = 0.1 * torch.randn(10, dim, generator=gen)

    def split(per_class, name):
        y = torch.arange(10).repeat_interleave(per_class)
        x = (protos[y] + 0.05 * torch.randn(len(y), dim, generator=gen)).to(torch.bfloat16)
        images = torch.randint(0, 256, (len(y), 3, 32, 32), dtype=torch.uint8, generator=gen)
        cached = features.Cached(x, y, {}, f"{name}{seed}", Path("/nonexistent"), 1.0, True)
        return data.CifarSplit(images, y, tuple(map(str, range(10))), name), cached

    (tr, trf), (te, tef) = split(n_train_per_class, "train"), split(n_test_per_class, "test")
    model = backbones.TransferNet("mobilenet_v2", Normalize(backbones.IMAGENET_MEAN, backbones.IMAGENET_STD, 224),
                                  nn.Identity(), backbones.make_head("mobilenet_v2"), {"sha256": "0" * 64})
    return heads.Features(model, tr, te, "quick", train_feats=trf, test_feats=tef)


def test_one_training_subset_rule():
    """data.training_subset: the subset-and-repeat rule of the scratch, strong, head, probe and fine-tune recipes."""
    from studylib import data

    labels = np.repeat(np.arange(10), 20)  # 20 images per class
    sub = data.training_subset(labels, 5, subset_seed=0, min_epoch_images=120)
    assert sub.per_class == 5 and len(sub.indices) == 50 and sub.val_indices is None
    assert np.array_equal(sub.indices, data.stratified_subset(labels, 5, 0))  # nested across sizes, ascending
    assert sub.repeats == 3 and np.array_equal(sub.epoch_indices, np.tile(sub.indices, 3))  # 150 >= 120 images
    assert data.training_subset(labels, 5, 0, min_epoch_images=10).repeats == 1  # never shortened
    for whole in (None, 20):  # the whole split is keyed as such: per_class None
        sub = data.training_subset(labels, whole, 0)
        assert sub.per_class is None and np.array_equal(sub.indices, np.arange(200))
    sub = data.training_subset(labels, 20, 0, val_fraction=0.1)  # a held-out split: no longer the whole split
    assert sub.per_class == 20 and len(sub.val_indices) == 20 and len(sub.indices) == 180
    assert not set(sub.indices) & set(sub.val_indices)


def test_head_subset_repetition_calibration_and_reuse(artifact_root):
    feats = fake_features()
    run = heads.head_job(feats, "head", "quick", seed=0, per_class=5, min_epoch_images=1000, progress=False).ensure(train=True)
    m = run.metrics
    assert m["train_images"] == 50 and m["repeats"] == 20 and m["train_n"] == 1000
    assert m["test_acc"] > 0.5 and len(run.predictions()["pred"]) == 100
    assert heads.head_job(feats, "head", "quick", seed=0, per_class=5, min_epoch_images=1000).run.done
    cal = heads.head_job(feats, "head", "quick", seed=1, val_fraction=0.2, kind="calibration").ensure(train=True).metrics
    assert cal["train_images"] == 160 and cal["val_images"] == 40
    c = cal["calibration"]
    assert c["val_n"] == 40 and c["test_n"] == 100 and c["temperature"] > 0
    assert len(c["reliability"]["before"]) == 15 and c["acc_before"] == pytest.approx(c["acc_after"])


def test_whole_split_and_no_repetition_share_one_run(artifact_root):
    feats = fake_features()
    a = heads.head_job(feats, "head", "quick", seed=0).run
    b = heads.head_job(feats, "head", "quick", seed=0, per_class=20, min_epoch_images=100).run
    assert a.id == b.id


def test_scratch_run_keys_follow_recipe_seed_and_subset(real_data_dir):
    ids = {scratch.job("custom_cnn", r, "quick", seed=s, data_dir=real_data_dir).run.id
           for r in scratch.RECIPES for s in (0, 42)}
    assert len(ids) == 4
    full = scratch.job("custom_cnn", "study", "quick", data_dir=real_data_dir).run
    assert scratch.job("custom_cnn", "study", "quick", per_class=100, data_dir=real_data_dir).run.id == full.id
    sub = scratch.job("custom_cnn", "study", "quick", per_class=10, min_epoch_images=500, data_dir=real_data_dir)
    assert sub.run.key["subset"] == {"per_class": 10, "subset_seed": 42, "repeats": 5} and "--per-class 10" in sub.command
    # a stated step budget (notebook 09's curve): its own epochs key the run and its command says them
    short = scratch.job("custom_cnn", "study", "quick", per_class=10, min_epoch_images=500, epochs=1,
                        data_dir=real_data_dir)
    assert short.run.key["recipe"]["epochs"] == 1 and short.run.id != sub.run.id and "--epochs 1 " in short.command
    assert "--epochs" not in sub.command
    assert "vit_small" not in full.key["recipe"]  # the other model's settings do not key this model's runs
    with pytest.raises(KeyError, match="not a scratch model"):
        scratch.job("mobilenet_v2", "study", "quick")
    with pytest.raises(KeyError, match="not a scratch recipe"):
        scratch.job("custom_cnn", "strong", "quick")


def test_whitening_layer_whitens_patches():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(64, 1, 16, 16, generator=gen)
    x = torch.cat([base, 0.8 * base + 0.2 * torch.randn(64, 1, 16, 16, generator=gen),
                   torch.randn(64, 1, 16, 16, generator=gen)], 1)
    conv = nn.Conv2d(3, 24, 2, bias=False)
    init_whitening(conv, x, eps=1e-6)
    with torch.no_grad():
        y = conv(x)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    assert torch.allclose((y.T @ y) / len(y), torch.eye(12), atol=0.05)
    assert torch.allclose(conv.weight[12:], -conv.weight[:12])  # +/- pairs


def test_random_translate_is_a_shifted_reflect_crop():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    assert torch.equal(strong.random_translate(x, 0, gen), x)
    out = strong.random_translate(x, 2, gen)
    padded = nn.functional.pad(x, (2,) * 4, mode="reflect")
    for i in range(2):
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))


def test_strong_network_and_tta():
    torch.manual_seed(0)
    model = models.Normalized(models.build_model("strong_cnn"), strong.normalizer()).eval()
    assert models.count_params(model)["total"] == 1_972_792 and not model.net[0].weight.requires_grad
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    cpu = torch.device("cpu")
    plain = strong.tta_logits(model, images, device=cpu, level=0, precision="fp32")
    with torch.no_grad():
        assert torch.allclose(plain, model(images), atol=1e-5)
    flip = strong.tta_logits(model, images, device=cpu, level=1, precision="fp32")
    assert torch.allclose(flip, strong.tta_logits(model, images.flip(-1), device=cpu, level=1, precision="fp32"),
                          atol=1e-5)  # mirror TTA is flip invariant
    assert strong.tta_logits(model, images, device=cpu, level=2, precision="fp32").shape == (4, 10)


def test_end_to_end_model_trains_every_layer():
    net = backbones.build_transfer("mobilenet_v2", init=None, size=32, frozen=False)
    assert all(p.requires_grad for p in net.parameters())
    net.train()
    assert net.backbone.training  # BatchNorm adapts, unlike the frozen TransferNet
    assert net(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)).shape == (4, 10)
    frozen = backbones.build_transfer("mobilenet_v2", init=None).train()
    assert not frozen.backbone.training and frozen.preprocess.size == 224


def test_random_init_backbone_has_re_estimated_batchnorm_and_says_so():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = heads.random_init_backbone("mobilenet_v2_float", size=32, seed=0, bn_images=images)
    b = heads.random_init_backbone("mobilenet_v2_float", size=32, seed=0, bn_images=images)
    assert a.provenance["source"] == "random init" and "64 training images" in a.provenance["bn_statistics"]
    ident = features.weights_id(a)
    assert ident == features.weights_id(b) and ident.startswith("random:")
    bn = a.backbone.features[0][1]
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))  # nothing estimated to key it
    with torch.no_grad():
        f = a.features(images)
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # estimated on first use
    assert torch.isfinite(f).all() and f.std() > 0
    assert features.weights_id(a) == ident  # the identity is the recipe, not the bits
    c = heads.random_init_backbone("mobilenet_v2_float", size=32, seed=0, bn_images=images[:32])
    assert features.weights_id(c) != ident  # other statistics images: another backbone


def test_random_init_backbone_estimates_in_fp32_once_whatever_the_caller_autocast():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    plain = heads.random_init_backbone("mobilenet_v2_float", size=32, seed=0, bn_images=images)
    under = heads.random_init_backbone("mobilenet_v2_float", size=32, seed=0, bn_images=images)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # as features.extract calls it
        under.features(images[:4])
    with torch.no_grad():
        plain.features(images[:4])
    bn_u, bn_p = under.backbone.features[0][1], plain.backbone.features[0][1]
    assert torch.equal(bn_u.running_mean, bn_p.running_mean) and torch.equal(bn_u.running_var, bn_p.running_var)
    before = bn_p.running_mean.clone()
    with torch.no_grad():
        plain.features(images[:4])
    assert torch.equal(bn_p.running_mean, before) and not plain.backbone.training  # not estimated again


def test_random_init_backbone_is_kept_in_the_store_and_read_back_identical(artifact_root, monkeypatch):
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fresh = heads.random_init_backbone("mobilenet_v2_float", size=32, seed=1, bn_images=images)
    stored = heads.random_init_backbone("mobilenet_v2_float", size=32, seed=1, bn_images=images, profile="quick")
    assert not list((artifact_root / "quick" / "random_backbone").glob("*/backbone.pt"))  # nothing run yet
    with torch.no_grad():
        fresh.features(images[:2]), stored.features(images[:2])
    assert list((artifact_root / "quick" / "random_backbone").glob("*/backbone.pt"))
    calls, forward = [], nn.modules.batchnorm._BatchNorm.forward
    monkeypatch.setattr(nn.modules.batchnorm._BatchNorm, "forward", lambda self, x: calls.append(self) or forward(self, x))
    again = heads.random_init_backbone("mobilenet_v2_float", size=32, seed=1, bn_images=images, profile="quick")
    assert not calls  # read back, not re-estimated
    for k, v in fresh.backbone.state_dict().items():
        assert torch.equal(v, again.backbone.state_dict()[k]), k
    assert features.weights_id(fresh) == features.weights_id(stored) == features.weights_id(again)
    assert again.provenance == fresh.provenance and not again.backbone.training
    other = heads.random_init_backbone("mobilenet_v2_float", size=32, seed=2, bn_images=images, profile="quick")
    assert features.weights_id(other) != features.weights_id(again)  # another seed is another run
    assert not calls  # keying another seed ran nothing either


def test_choose_lr_is_best_validation_then_smaller():
    import pandas as pd
    search = pd.DataFrame({"lr": [1e-4, 3e-4, 1e-3], "val_acc": [0.5, 0.7, 0.7]})
    assert finetune.choose_lr(search) == 3e-4 and finetune.choose_lr(pd.DataFrame()) is None


def test_lr_choice_detects_a_grid_edge():
    import pandas as pd
    lrs = [1e-4, 3e-4, 1e-3, 3e-3]
    rising = pd.DataFrame({"lr": lrs, "val_acc": [0.196, 0.260, 0.367, 0.407]})  # the old random-init search
    assert finetune.lr_choice(rising) == {"lr": 3e-3, "interior": False, "edge": "top"}
    falling = pd.DataFrame({"lr": lrs, "val_acc": [0.9, 0.8, 0.7, 0.6]})
    assert finetune.lr_choice(falling) == {"lr": 1e-4, "interior": False, "edge": "bottom"}
    peaked = pd.DataFrame({"lr": lrs[::-1], "val_acc": [0.795, 0.864, 0.823, 0.770]})  # unsorted input
    assert finetune.lr_choice(peaked) == {"lr": 1e-3, "interior": True, "edge": None}
    flat_top = pd.DataFrame({"lr": lrs, "val_acc": [0.5, 0.7, 0.7, 0.6]})  # a tie beside the best: not "worse"
    assert finetune.lr_choice(flat_top) == {"lr": 3e-4, "interior": False, "edge": None}


class _FakeSearchRun:
    def __init__(self, lr, acc):
        import pandas as pd
        self.done, self.id = True, f"lr{lr:g}"
        self.metrics = {"val_acc": acc, "val_n": 10, "train_n": 90, "epochs": 1, "steps": 3, "train_seconds": 1.0,
                        "device": "cpu"}
        self._history = pd.DataFrame({"train_acc": [acc + 0.1]})

    def history(self):
        return self._history


def _fake_search(monkeypatch, accuracy):
    """finetune.lr_search with its runs replaced by ``accuracy(lr)`` (nothing trains); returns the rates asked for."""
    asked = []

    def fake_job(init, profile, *, lr, **kw):
        asked.append(lr)
        run = _FakeSearchRun(lr, accuracy(lr))
        return type("J", (), {"ensure": lambda self: run, "run": run})()

    monkeypatch.setattr(finetune, "job", fake_job)
    return asked


def test_lr_search_extends_the_grid_until_the_choice_is_interior(monkeypatch):
    import math
    peak = 3e-2  # two half-decade steps above the full profile's grid (3e-4, 1e-3, 3e-3)
    asked = _fake_search(monkeypatch, lambda lr: 1 - abs(math.log10(lr / peak)))
    search = finetune.lr_search("random", "full")
    assert asked == pytest.approx([3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]) and list(search.lr) == sorted(asked)
    assert finetune.lr_choice(search) == {"lr": pytest.approx(3e-2), "interior": True, "edge": None}
    assert {"train_acc", "steps", "train_n", "val_n"} <= set(search.columns)  # the budget beside every choice


def test_an_unfinished_search_chooses_nothing_so_no_run_trains_at_its_provisional_best(monkeypatch):
    """The plan of 2026-12-07 queued 15-epoch and 60-epoch runs at 1e-3 / 3e-4 while both searches were still
    running (one of them with its best at the grid's edge): a search as far as it has run must choose nothing."""
    import math
    peak, finished = 3e-2, {3e-4, 1e-3}  # 3e-3 not trained yet: the first round is incomplete
    monkeypatch.setattr(finetune, "job", lambda init, profile, *, lr, **kw: type("J", (), {
        "run": _FakeSearchRun(lr, 1 - abs(math.log10(lr / peak))) if lr in finished else
        type("R", (), {"done": False})()})())
    search = finetune.lr_search("random", "full", train=False)
    assert list(search.lr) == pytest.approx(sorted(finished)) and finetune.lr_choice(search)["lr"] == pytest.approx(1e-3)
    assert finetune.choose_lr(search) is None
    assert finetune.cell_jobs("full", train=False)[("finetune", "random")] == []
    assert not any(init == "random" for init, _ in finetune.budget_jobs("full", train=False))
    finished |= {3e-3, 1e-2, 3e-2, 1e-1}  # the search ran to an interior choice
    assert finetune.choose_lr(finetune.lr_search("random", "full", train=False)) == pytest.approx(3e-2)


def test_next_value_walks_the_half_decade_ladder():
    from studylib.recipes import tuning
    assert tuning.next_value(3e-3, up=True) == pytest.approx(1e-2)
    assert tuning.next_value(1e-2, up=True) == pytest.approx(3e-2)
    assert tuning.next_value(3e-4, up=False) == pytest.approx(1e-4)
    assert tuning.next_value(1e-4, up=False) == pytest.approx(3e-5)


def test_efficiency_curves_full_data_points_are_the_probe_cells_and_the_equal_step_budget_runs(monkeypatch):
    """Notebook 09's grid-network pairs end at 50,000 images with runs of other sections: the probe cells and the
    training-budget runs whose epochs give the subsets' optimiser steps (efficiency_epochs), never another budget."""
    g = config.grid("controlled", "full")
    monkeypatch.setattr(finetune, "probe_cells", lambda *a, **k: {i: [f"probe cell {i}"] for i in finetune.INITS})
    # only the ImageNet init's search has finished: the random init has no budget runs yet
    monkeypatch.setattr(finetune, "budget_jobs", lambda *a, **k: {("imagenet", e): [f"imagenet, {e} epochs"]
                                                                   for e in g["budget_epochs"]})
    assert finetune.efficiency_full_jobs("full", train=False) == {
        ("probe", "imagenet", 5000): ["probe cell imagenet"], ("probe", "random", 5000): ["probe cell random"],
        ("finetune", "imagenet", 5000): [f"imagenet, {g['efficiency_epochs']} epochs"]}
    per_class = config.get_profile("quick")["train_per_class"]  # the quick profile's whole training set
    assert {pc for _, _, pc in finetune.efficiency_full_jobs("quick", train=False)} == {per_class}


def test_lr_search_stops_at_its_extension_budget_and_says_edge(monkeypatch):
    asked = _fake_search(monkeypatch, lambda lr: lr)  # always better higher: never interior
    search = finetune.lr_search("random", "full")
    g = config.grid("controlled", "full")
    assert len(asked) == len(g["lr_candidates"]) + g["lr_max_extensions"]
    assert finetune.lr_choice(search)["edge"] == "top"


def test_probe_and_fine_tune_see_the_same_test_images_whatever_their_seeds(real_data_dir):
    """The notebook-10 bug: ``seed`` used to pick the quick profile's subset too, so two models with different
    seeds were tested on different images. Subsets now come from the protocol's subset_seed alone."""
    ft = finetune.job("imagenet", "quick", seed=0, data_dir=real_data_dir).run.key["data"]["eval"]
    ft_other = finetune.job("random", "quick", seed=7, data_dir=real_data_dir).run.key["data"]["eval"]
    train, test = data.load_profile_data(config.get_profile("quick"), real_data_dir)
    assert ft == ft_other == data.split_key(test)
    head_test = heads.Features(backbones.build_transfer("mobilenet_v2", init=None), train, test, "quick").test
    assert data.split_key(head_test) == ft
    for seed in (0, 42):
        job = scratch.job("custom_cnn", "study", "quick", seed=seed, data_dir=real_data_dir)
        assert job.run.key["data"]["test"] == ft


def test_each_grid_run_names_the_command_that_trains_it(real_data_dir):
    """A "not run here" line must name a command that trains that run: a data-efficiency point is not the
    full-data cell of the same seed, and a learning-rate search run is trained by the row's search."""
    cell = finetune.job("imagenet", "quick", seed=1, data_dir=real_data_dir).command
    assert cell.endswith("--only finetune --inits imagenet --seeds 1")
    point = finetune.job("random", "quick", seed=2, per_class=10, data_dir=real_data_dir).command
    assert point.endswith("--only efficiency --inits random --seeds 2 --per-class 10")
    search = finetune.job("imagenet", "quick", seed=0, val_fraction=0.1, data_dir=real_data_dir).command
    assert search.endswith("--only lr --inits imagenet")
    search = finetune.job("imagenet", "quick", seed=0, per_class=10, val_fraction=0.1, data_dir=real_data_dir).command
    assert search.endswith("--only lr --inits imagenet --per-class 10")  # the search of that data-efficiency size
    assert finetune._command("full", "random", 3, per_class=100, training="probe").endswith(
        "--only efficiency --inits random --seeds 3 --per-class 100")
    assert finetune._command("full", "random", 3, training="probe").endswith("--only probe --inits random --seeds 3")


def test_retraining_estimate_covers_the_selected_notebooks(monkeypatch):
    from studylib import estimate

    monkeypatch.setattr(estimate, "rates", lambda quick=False: {k: 100.0 for k in (
        "custom_cnn", "vit_small", "strong", "finetune", "extract224", "extract224_fp32")})
    t = estimate.stages("full", ["02_scratch_cnn.ipynb", "04_vit.ipynb", "12_findings.ipynb"], ["02", "12"])
    assert list(t.notebook) == ["02", "12"]
    cnn = t.set_index("notebook").loc["02"]
    assert cnn["images"] == 2 * (15 * 50000 + 15 * 10000 / 3) and cnn["minutes here"] == cnn["images"] / 100 / 60
    g = config.grid("controlled", "full")  # 12 counts the training-budget points (30 and 60 epochs: most of its time)
    budget = 2 * sum(n * e * 50000 for e, n in zip(g["budget_epochs"], g["budget_seed_counts"]) if e != 15)
    assert t.set_index("notebook").loc["12", "images"] > budget
    text = estimate.format_table(t)
    assert "Estimated retraining time" in text and "total" in text and "GPU" in text


@pytest.mark.parametrize("init", finetune.INITS)
def test_shipped_learning_rate_searches_choose_an_interior_rate(init, real_data_dir, monkeypatch):
    """The full profile's searches as shipped (nothing trains): a finished search must have chosen a rate with a
    measured, worse neighbour on each side. A search still extending (its next rate not yet run) is skipped."""
    monkeypatch.setenv(config.DATA_DIR_ENV, str(real_data_dir))
    g = config.grid("controlled", "full")
    search = finetune.lr_search(init, "full", train=False)
    choice = finetune.lr_choice(search)
    if choice["interior"]:
        assert search.steps.min() > 0 and search.train_n.min() > 0  # the budget is stated beside the choice
        return
    extensions = len(search) - len(g["lr_candidates"])
    if search.empty or len(search) < len(g["lr_candidates"]) or (choice["edge"] and extensions < g["lr_max_extensions"]):
        pytest.skip(f"the {init} search has not finished ({len(search)} rates run)")
    pytest.fail(f"the {init} search chose {choice['lr']:.0e}, not interior ({choice}); extend lr_max_extensions")


def test_a_tie_that_reaches_the_grid_edge_extends_the_search():
    from studylib.recipes import tuning

    scores = {1e-4: 0.1, 1e-3: 0.2, 1e-2: 0.3, 1e-1: 0.3, 3e-1: 0.3, 1.0: 0.25}
    t = tuning.extend_until_interior([1e-4, 1e-3, 1e-2, 1e-1], lambda v: {"val_acc": scores[v]}, column="l2",
                                     max_extensions=4)
    assert list(t.l2) == [1e-4, 1e-3, 1e-2, 1e-1, 3e-1, 1.0]  # past the tie at the top, until a worse value
    assert tuning.choice(t, "l2") == {"l2": 1e-2, "interior": False, "edge": None}
    assert tuning.plateau_edge(t, "l2") is None


def test_shipped_probes_choose_an_interior_l2_or_stop_on_a_plateau():
    """Every shipped L-BFGS probe's L2 strength: interior (a measured, worse neighbour on each side), or on a plateau
    of values that tie it (validation accuracy flat, e.g. the 96-feature block-14 ImageNet probe, 75.1% from 1e-6
    to 3e-6) that the search could not move past: inside the grid, or at an edge once the search had used all its
    extensions. Never at an edge the search could still have moved."""
    import json

    import pandas as pd

    from studylib.recipes import tuning

    probes = sorted((config.SHIPPED_RUNS_DIR / "full" / "lbfgs_probe").glob("*/metrics.json"))
    if not probes:
        pytest.skip("no L-BFGS probe shipped yet")
    r = config.recipe("lbfgs_probe")
    for path in probes:
        m = json.loads(path.read_text())
        search = pd.DataFrame(m["l2_search"])
        c, plateau = tuning.choice(search, "l2"), tuning.plateau_edge(search, "l2")
        assert c["l2"] == m["l2"], path.parent.name
        if c["interior"]:
            continue
        edge = c["edge"] or plateau
        exhausted = len(search) - len(r["l2_start"]) >= r["max_extensions"]
        flat = plateau is not None and len(search.val_acc.nlargest(2).unique()) == 1
        assert edge is None or (exhausted and flat), (
            f"{path.parent.name}: L2 {m['l2']:g} with a tie reaching the {edge} edge of its grid and extensions left: "
            "the search stopped where it could still move")


def test_earlier_block_probes_are_keyed_apart_from_the_whole_backbone(real_data_dir, monkeypatch):
    """A probe on the first blocks is another network: its feature caches and run never share a key with the
    grid's whole-backbone probe, and its command names the block (nothing is extracted here)."""
    from studylib.recipes import linear_probe

    monkeypatch.setenv(config.DATA_DIR_ENV, str(real_data_dir))
    whole = linear_probe.probe_job("imagenet", "quick", 0)
    block = config.grid("controlled", "quick")["probe_block"]
    part = finetune.block_probe_jobs("quick")["imagenet"][0]
    assert part.run.id != whole.run.id and part.run.key["model"].endswith(f"@block{block}")
    assert {j.run.id for j in part.needs}.isdisjoint(j.run.id for j in whole.needs)
    assert part.command.endswith(f"--only probe --inits imagenet --seeds 0 --block {block}")
    net = linear_probe.truncated(backbones.build_transfer("mobilenet_v2_float", size=32), block)
    assert net.features(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 96)  # block 14: 96 channels
