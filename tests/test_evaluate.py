import math

import numpy as np
import pytest
import torch
from torch import nn

from studylib import config, measure, models
from studylib.measure import evaluate, gradcam
from studylib.recipes import scratch
from studylib.report import stats
from studylib.serve import deploy

CLASSES = ["a", "b", "c"]


# --- confidence intervals ---------------------------------------------------------------
def test_wilson_interval_known_values():
    # Published worked example (Newcombe 1998, table I): 81 of 263 -> 0.2553 to 0.3662.
    lo, hi = stats.wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-5) and hi == pytest.approx(0.3662, abs=5e-5)
    # Symmetric around 1/2, and never outside [0, 1] at the edges (where Wald collapses to a point).
    lo, hi = stats.wilson_interval(50, 100)
    assert lo + hi == pytest.approx(1.0) and hi - lo == pytest.approx(0.1923, abs=1e-4)
    lo, hi = stats.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert stats.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_wilson_interval_shrinks_like_one_over_root_n():
    w = [np.subtract(*stats.wilson_interval(int(0.87 * n), n)[::-1]) for n in (1000, 4000, 16000)]
    assert w[0] / w[1] == pytest.approx(2.0, rel=0.02) and w[1] / w[2] == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("correct,n", [(1, 0), (-1, 5), (6, 5)])
def test_wilson_interval_rejects_bad_counts(correct, n):
    with pytest.raises(ValueError):
        stats.wilson_interval(correct, n)


def test_accuracy_with_ci():
    logits = torch.eye(3)[[0, 1, 2, 0]]
    out = evaluate.accuracy_with_ci(logits, torch.tensor([0, 1, 2, 1]))
    assert out["correct"] == 3 and out["n"] == 4 and out["acc"] == 0.75
    assert out["ci_low"] < 0.75 < out["ci_high"]


# --- confusion --------------------------------------------------------------------------
def test_confusion_matrix_and_report():
    labels = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    cm = stats.confusion_matrix(pred, labels, 3)
    assert cm.tolist() == [[1, 2, 0], [1, 1, 0], [0, 0, 1]]
    rep = evaluate.classification_report(torch.eye(3)[pred], torch.as_tensor(labels), CLASSES).set_index("class")
    assert rep.loc["a", "precision"] == pytest.approx(1 / 2) and rep.loc["a", "recall"] == pytest.approx(1 / 3)
    assert rep.loc["a", "f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert rep.loc["c"].tolist()[:3] == [1.0, 1.0, 1.0] and rep.support.tolist() == [3, 2, 1]


def test_report_class_never_predicted_is_zero_not_nan():
    rep = evaluate.classification_report(torch.eye(3)[[0, 0]], torch.tensor([0, 1]), CLASSES)
    assert not rep.isna().any().any() and rep.loc[1, "precision"] == 0.0


def test_top_confusion_pairs_sum_both_directions():
    cm = np.array([[50, 3, 9],
                   [8, 40, 1],
                   [2, 7, 30]])
    top = stats.top_confusion_pairs(cm, CLASSES, k=3)
    assert top.pair.tolist() == ["a ↔ b", "a ↔ c", "b ↔ c"]
    assert top.total.tolist() == [11, 11, 8]  # tie 11/11 broken by name
    assert top.iloc[0][["a_to_b", "b_to_a"]].tolist() == [3, 8]


def test_compare_pairs_reduction():
    base = np.array([[0, 30, 5], [10, 0, 1], [5, 1, 0]])
    other = np.array([[0, 4, 5], [6, 0, 1], [1, 1, 0]])
    out = stats.compare_pairs(base, other, CLASSES, k=2)
    assert out.pair.tolist() == ["a ↔ b", "a ↔ c"]
    assert out.base.tolist() == [40, 10] and out.other.tolist() == [10, 6]
    assert out.reduction_pct.tolist() == pytest.approx([75.0, 40.0])


def test_most_confident_mistakes_ranked():
    logits = torch.tensor([[5.0, 0, 0], [0, 1.0, 0], [0, 0, 9.0], [0, 3.0, 0]])
    labels = torch.tensor([1, 1, 0, 0])  # image 1 is right; 2 (9.0) then 0 (5.0) then 3 (3.0) wrong
    out = evaluate.most_confident_mistakes(logits, labels, k=2)
    assert out["index"].tolist() == [2, 0] and out.pred.tolist() == [2, 0] and out.true.tolist() == [0, 1]
    assert out.confidence.is_monotonic_decreasing


# --- latency, throughput, size ------------------------------------------------------------
def test_latency_harness_is_sane():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    before = torch.get_num_threads()
    out = measure.measure_latency(model, torch.rand(1, 3, 32, 32), threads=1, warmup=2, runs=20)
    assert torch.get_num_threads() == before  # restored
    assert out["runs"] == 20 and out["threads"] == 1 and out["batch"] == 1
    assert 0 < out["min_ms"] <= out["median_ms"] <= out["p90_ms"] < 1000
    bf16 = measure.measure_latency(model, torch.rand(1, 3, 32, 32), threads=1, warmup=1, runs=5, precision="bf16")
    assert bf16["precision"] == "bf16" and bf16["median_ms"] > 0
    thr = measure.measure_throughput(model, torch.rand(64, 3, 32, 32), threads=1, runs=2)
    assert thr["images_per_s"] > 0 and thr["batch"] == 64
    with pytest.raises(ValueError):
        measure.measure_latency(model, torch.rand(1, 3, 32, 32), runs=0)


def test_latency_grows_with_work():
    small, big = nn.Linear(64, 64), nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(8)])
    t_small = measure.measure_latency(small, torch.rand(1, 64), threads=1, warmup=2, runs=20)["median_ms"]
    t_big = measure.measure_latency(big, torch.rand(64, 1024), threads=1, warmup=2, runs=20)["median_ms"]
    assert t_big > 5 * t_small  # ~8 GFLOP-scale more work must show up in the timings


def test_state_dict_bytes_counts_parameters():
    n = measure.state_dict_bytes(nn.Linear(1000, 100))
    assert 4 * 100_100 <= n < 4 * 100_100 + 10_000


# --- BatchNorm folding (notebook 05's re-evaluation) ------------------------------------------
def _random_bn_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5), m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_fold_batchnorm_keeps_the_function_of_transfer_models(name):
    from studylib.models import backbones

    torch.manual_seed(0)
    model = _random_bn_stats(backbones.build_transfer(name, init=None, size=32)).use_channels_last()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    folded, n = measure.fold_batchnorm(model, x[:2])
    bns = lambda m: sum(isinstance(y, nn.BatchNorm2d) for y in m.modules())  # noqa: E731
    assert n == bns(model) > 40 and bns(folded) == 0          # every conv->BN pair folded, the original untouched
    with torch.no_grad():
        a, b = model(x), folded(x)                             # images it was not folded on
    assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()))


def test_fold_batchnorm_folds_the_custom_cnn_and_leaves_the_vit():
    for name, expected in (("custom_cnn", 7), ("vit_small", 0)):
        model = _random_bn_stats(models.build_model(name))
        x = torch.randn(3, 3, 32, 32)
        folded, n = measure.fold_batchnorm(model, x)
        assert n == expected
        with torch.no_grad():
            assert torch.allclose(model(x), folded(x), atol=1e-4)


class ConvReused(nn.Module):
    """The conv output feeds the BatchNorm *and* a skip: folding the pair would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_fold_batchnorm_refuses_to_change_a_model():
    model = _random_bn_stats(ConvReused())
    with pytest.raises(measure.FoldError, match="changed its outputs"):
        measure.fold_batchnorm(model, torch.randn(2, 3, 8, 8))


# --- ONNX Runtime re-evaluation (notebook 05) ---------------------------------------------
def _deployable(name: str) -> nn.Module:
    """``name`` in its deployed form (uint8 images in, preprocessing inside), untrained, BN statistics random."""
    from studylib.models import backbones

    torch.manual_seed(0)
    if name in scratch.MODELS:
        return _random_bn_stats(scratch.build(name, config.recipe("study")))
    return _random_bn_stats(backbones.build_transfer(name, init=None, size=64)).use_channels_last()


@pytest.mark.parametrize("name", ["custom_cnn", "vit_small", "mobilenet_v2", "efficientnet_lite0"])
def test_onnx_logits_are_the_models_fp32_logits(name):
    from studylib.recipes import engine

    model = _deployable(name)
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    expected = engine.batched_logits(model, x, precision="fp32", batch_size=5)
    got = measure.onnx_logits(model, x, batch_size=2, threads=1)  # 2 + 2 + 1: the batch size is free
    assert got.dtype == torch.float32 and got.shape == expected.shape == (5, 10)
    assert torch.allclose(got, expected, rtol=0, atol=1e-4 * float(expected.abs().max()))
    assert not model.training  # left in eval mode, as it came


def test_onnx_batch_follows_the_models_input_size():
    from studylib.models import backbones

    at224 = backbones.build_transfer("mobilenet_v2", init=None, size=224)
    at64 = backbones.build_transfer("mobilenet_v2", init=None, size=64)
    assert measure.onnx_batch(at224) == measure.ONNX_BATCH_BY_SIZE[224]
    assert measure.onnx_batch(at64) == measure.onnx_batch(scratch.build("custom_cnn", config.recipe("study"))) \
        == measure.ONNX_BATCH  # sizes not swept, and models without a resizing preprocessor


class FixedBatch(nn.Module):
    """Its trace records the batch size as a constant: ONNX Runtime's copy works only at that size."""

    def forward(self, x):
        return x.float().flatten(1)[:, :10].reshape(len(x), 10)


def test_onnx_session_refuses_a_copy_that_differs_from_the_model():
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    measure.onnx_session(FixedBatch(), x[:2])  # checked where it was traced: fine
    with pytest.raises(measure.OnnxExportError, match="FixedBatch"):
        measure.onnx_session(FixedBatch(), x[:2], check=x)


# --- Grad-CAM -------------------------------------------------------------------------------
class Spot(nn.Module):
    """Class 1 scores how bright the image is anywhere: its CAM must sit on the bright square."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 9), self.conv.bias.zero_()
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0] * 4, [1.0] * 4])), self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


def _square(r: int, c: int) -> torch.Tensor:
    img = torch.zeros(1, 1, 16, 16)
    img[..., r:r + 4, c:c + 4] = 1.0
    return img


def test_gradcam_shape_range_and_follows_the_object():
    model = Spot()
    cam = gradcam.GradCAM(model, model.act)
    for r, c in [(1, 1), (10, 11), (2, 12)]:
        maps, logits = cam(_square(r, c), class_idx=1)
        assert maps.shape == (1, 16, 16) and logits.shape == (1, 2)
        assert maps.min() >= 0 and maps.max() == pytest.approx(1.0)
        peak = divmod(int(maps[0].argmax()), 16)
        assert r <= peak[0] < r + 4 and c <= peak[1] < c + 4, (r, c, peak)


def test_gradcam_works_through_frozen_weights_and_restores_mode():
    model = Spot()
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    maps, _ = gradcam.GradCAM(model, model.act)(_square(5, 5))  # predicted class
    assert maps.shape == (1, 16, 16) and model.training
    assert all(p.grad is None for p in model.parameters())


def test_gradcam_vit_tokens_and_study_models():
    grid = gradcam.vit_tokens_to_grid(torch.arange(2 * 65 * 4, dtype=torch.float).view(2, 65, 4))
    assert grid.shape == (2, 4, 8, 8)
    assert grid[0, :, 0, 0].tolist() == list(range(4, 8))  # first patch token, class token dropped
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    for name in ("custom_cnn", "vit_small"):
        torch.manual_seed(0)
        model = scratch.build(name, config.recipe("study")).eval()
        maps = gradcam.for_model(model, images)
        assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all() and maps.max() <= 1.0


def test_gradcam_unused_layer_is_a_clear_error():
    model = Spot()
    with pytest.raises(RuntimeError, match="never ran"):
        gradcam.GradCAM(model, nn.ReLU())(_square(1, 1))


# --- deploy ------------------------------------------------------------------------------------
def test_deploy_missing_run_names_the_command(artifact_root, real_data_dir):
    row = deploy.load("custom_cnn_refcode", "quick")
    assert not row.ok and row.model is None and row.run is None
    assert "02_scratch_cnn" in row.status and "--recipe reference_code --profile quick" in row.status


def test_deploy_loads_the_finished_run_of_its_recipe(artifact_root, real_data_dir):
    """A finished run (weights written without training) is found by its key and deployed behind the
    normalisation of its own recipe."""
    job = scratch.job("custom_cnn", "reference_code", "quick", data_dir=real_data_dir)
    torch.manual_seed(0)
    net = models.build_model("custom_cnn", linear_init="normal_0.01").eval()
    job.run.finish({"model": "custom_cnn", "recipe": "reference_code", "seed": 42, "test_acc": 0.1},
                   files={"model.pt": net.state_dict()})
    row = deploy.load("custom_cnn_refcode", "quick")
    assert row.ok and row.label == "Custom CNN (reference code)" and row.strategy == "from scratch"
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    std = config.RECIPES["reference_code"]["normalize"]["std"]
    expected = net(((x.float() / 255) - torch.tensor(config.CIFAR10_MEAN).view(1, 3, 1, 1))
                   / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.allclose(row.model(x), expected, atol=1e-5)  # the reference code's std, inside the deployed model
    assert not deploy.load("custom_cnn", "quick").ok  # the other recipe's row is not it


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0", "efficientnet_lite0"])
def test_gradcam_layers_of_transfer_architectures(name):
    # Untrained architectures (weights_spec=None: shape tests only): the hooked layer exists, runs,
    # and gives one 32x32 map per image on the CIFAR grid.
    torch.manual_seed(0)
    model = models.build_model(name, init=None).eval()
    maps = gradcam.for_model(model, torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8))
    assert maps.shape == (1, 32, 32) and torch.isfinite(maps).all()


def test_the_one_timing_helper_warms_up_then_times_each_call(monkeypatch):
    from studylib import timing

    clock, calls = iter(range(0, 100, 2)), []  # each timed call "takes" 2 s on a fake clock
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    t = timing.time_call(lambda: calls.append(1), warmup=3, repeats=4)
    assert len(calls) == 7 and t["all_s"] == [2, 2, 2, 2] and t["total_s"] == 8 and t["median_s"] == 2
    assert timing.rate(lambda: None, 64, warmup=0, repeats=4) == 64 * 4 / 8  # images per second
    with pytest.raises(ValueError, match="repeats >= 1"):
        timing.time_call(lambda: None, repeats=0)


# --- the INT8 path of choice ------------------------------------------------------------
def _int8_rows(key: str, rows: list[tuple[str, float, float, float]]) -> list[dict]:
    """int8_table-like rows of one model: (variant, accuracy %, batch-1 ms, batch-64 ms), fp32 first."""
    return [{"key": key, "Model": key.upper(), "Variant": v, "Accuracy (%)": acc, "Latency (ms)": b1,
             "Latency, batch 64 (ms)": b64} for v, acc, b1, b64 in rows]


def _with_ratios(t):
    base = t[t.Variant == "fp32"].set_index("key")
    t["Δ accuracy (points)"] = t["Accuracy (%)"] - t.key.map(base["Accuracy (%)"])
    t["Speed-up"] = t.key.map(base["Latency (ms)"]) / t["Latency (ms)"]
    t["Speed-up, batch 64"] = t.key.map(base["Latency, batch 64 (ms)"]) / t["Latency, batch 64 (ms)"]
    return t


def test_chosen_int8_path_is_the_fastest_within_a_point():
    """Per row the fastest static INT8 path at batch 1 among those within a point of fp32: a faster path that
    loses more is passed over, torchvision's ReLU variant and dynamic INT8 are never chosen, and a row with no path
    within a point has none (its summary says so and shows its most accurate path)."""
    import pandas as pd

    from studylib.report import findings

    t = _with_ratios(pd.DataFrame(
        _int8_rows("a", [("fp32", 87.0, 12.0, 640.0), ("int8 static", 86.6, 30.0, 900.0),
                         (measure.INT8_COMPILED, 86.5, 7.0, 220.0), (measure.INT8_ONNX, 85.8, 4.0, 300.0),
                         (measure.TORCHVISION_INT8, 73.0, 3.0, 100.0)])
        + _int8_rows("b", [("fp32", 75.0, 4.0, 60.0), (measure.INT8_ONNX, 74.9, 0.8, 20.0),
                           ("int8 dynamic", 75.0, 0.5, 10.0)])
        + _int8_rows("c", [("fp32", 90.0, 10.0, 100.0), (measure.INT8_ONNX, 88.5, 5.0, 50.0),
                           ("int8 static", 88.8, 20.0, 200.0)])))
    t["Chosen INT8 path"] = measure.chosen_int8(t)
    assert t[t["Chosen INT8 path"]][["key", "Variant"]].values.tolist() == [["a", measure.INT8_COMPILED],
                                                                           ["b", measure.INT8_ONNX]]
    s = measure.int8_summary(t)
    assert s.loc["A", "Speed-up, batch 1"] == pytest.approx(12 / 7) and not s.loc["A", "Meets the goal at batch 1"]
    assert s.loc["B", "Meets the goal at batch 1"] and s.loc["B", "Meets the goal at batch 64"]
    assert s.loc["C", "INT8 path"].startswith("none within 1 point") and "int8 static" in s.loc["C", "INT8 path"]
    assert not s.loc["C", "Meets the goal at batch 1"]
    line = findings.int8(s, measure.INT8_GOAL)
    assert "1 of 3 rows reach 2x at batch 1" in line and "B (int8 static, onnxruntime" in line
    assert "A (int8 static, PT2E + torch.compile (oneDNN): -0.50 points, 1.71x at batch 1, 2.91x at batch 64)" in line


def test_int8_table_leaves_the_compiled_path_out_where_it_may_not_compile(quick_models, real_data_dir, capsys):
    """The default render on a machine kind without shipped compiled measurements (``compile_missing=False``): the
    row keeps its other INT8 paths, the compiled one is left out and the notebook says why; no path is chosen twice."""
    from studylib import data

    cfg = config.get_profile("quick")
    rows = {k: d for k, d in deploy.load_all("quick").items() if k == "custom_cnn"}
    train, test = data.load_profile_data(cfg, real_data_dir)
    t = measure.int8_table(rows, test, train, cfg["evaluation"], "quick", compile_missing=False)
    assert {"fp32", "int8 static", measure.INT8_ONNX} <= set(t.Variant) and measure.INT8_COMPILED not in set(t.Variant)
    printed = capsys.readouterr().out
    assert f"{measure.INT8_COMPILED} left out: not measured on this machine kind" in printed
    assert t["Chosen INT8 path"].sum() <= 1
