"""Linear probes on synthetic cached features: subsets, repetition, validation logits, reuse, grids."""

from pathlib import Path

import numpy as np
import pytest
import torch

from studylib import data, experiments, features, probes, transfer


def fake_probe_data(n_train_per_class=20, n_test_per_class=10, dim=1280, seed=0) -> probes.ProbeData:
    """Features where class c is a noisy copy of a random prototype: a linear head can learn them."""
    gen = torch.Generator().manual_seed(seed)
    protos = 0.1 * torch.randn(10, dim, generator=gen)

    def split(per_class, name):
        y = torch.arange(10).repeat_interleave(per_class)
        x = (protos[y] + 0.05 * torch.randn(len(y), dim, generator=gen)).to(torch.bfloat16)
        images = torch.zeros(len(y), 3, 32, 32, dtype=torch.uint8)
        cached = features.Cached(x, y, {}, f"{name}{seed}", Path("/nonexistent"), 1.0, True)
        return data.CifarSplit(images, y, tuple(map(str, range(10))), name), cached

    (tr, trf), (te, tef) = split(n_train_per_class, "train"), split(n_test_per_class, "test")
    return probes.ProbeData("mobilenet_v2", 224, tr, te, trf, tef, model=None)


def test_repeat_to():
    idx = np.arange(7)
    assert len(probes.repeat_to(idx, 20)) == 21 and set(probes.repeat_to(idx, 20)) == set(idx)
    assert np.array_equal(probes.repeat_to(idx, 5), idx)


def test_train_probe_subset_repetition_validation_and_reuse(artifact_root):
    pdata = fake_probe_data()
    run = probes.train_probe(pdata, "quick", seed=0, per_class=5, min_epoch_images=1000, progress=False)
    m = run["metrics"]
    assert m["train_images"] == 50 and m["repeats"] == 20 and m["train_n"] == 1000
    assert m["test_acc"] > 0.5 and run["test_logits"].shape == (100, 10)
    again = probes.train_probe(pdata, "quick", seed=0, per_class=5, min_epoch_images=1000, progress=False)
    assert again["reused"] and torch.equal(again["test_logits"], run["test_logits"])

    cal = probes.train_probe(pdata, "quick", seed=1, val_fraction=0.2, progress=False)
    assert cal["metrics"]["train_images"] == 160 and cal["metrics"]["val_images"] == 40
    assert cal["val_logits"].shape == (40, 10) and torch.bincount(cal["val_labels"]).tolist() == [4] * 10


def test_whole_split_and_no_repetition_share_one_run(artifact_root):
    pdata = fake_probe_data()
    a = probes.train_probe(pdata, "quick", seed=0, progress=False)
    b = probes.train_probe(pdata, "quick", seed=0, per_class=20, min_epoch_images=100, progress=False)
    assert b["reused"] and a["out_dir"] == b["out_dir"]


def test_with_input_size_changes_only_resolution():
    model = transfer.build_transfer("mobilenet_v2", weights_spec=None)
    mean = model.preprocess.mean.clone()
    probes.with_input_size(model, 64)
    assert model.preprocess.size == 64 and torch.equal(model.preprocess.mean, mean)
    assert model.preprocess(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="at least"):
        probes.with_input_size(model, 16)


def test_experiment_grids_are_strict():
    for name, per_profile in experiments.EXPERIMENTS.items():
        assert set(per_profile) == {"full", "quick"}, name
    g = experiments.grid("data_efficiency", "full")
    assert g["train_per_class"][-1] * 10 == 50_000 and len(g["seeds"]) >= 3
    assert len(experiments.grid("seeds", "full")["seeds"]) >= 5
    with pytest.raises(KeyError, match="unknown experiment"):
        experiments.grid("nope", "full")
    with pytest.raises(KeyError, match="no grid"):
        experiments.grid("seeds", "medium")
