"""Calibration metrics, temperature scaling, CIFAR-10-C-style corruptions and the robustness table,
on toy inputs whose right answers are known."""

import pandas as pd
import pytest
import torch
from torch import nn

from studylib import artifacts, data
from studylib.data import corruptions
from studylib.measure import calibration, robustness


# ---------------------------------------------------------------------------------------
# ECE and reliability
# ---------------------------------------------------------------------------------------
def logits_with_confidence(conf: float, n: int, classes: int = 10) -> torch.Tensor:
    """Logits whose softmax puts probability ``conf`` on class 0 and the rest evenly elsewhere."""
    other = (1 - conf) / (classes - 1)
    row = torch.full((classes,), other).log()
    row[0] = torch.tensor(conf).log()
    return row.repeat(n, 1)


def test_ece_of_known_inputs():
    logits = logits_with_confidence(0.9, 100)
    labels = torch.zeros(100, dtype=torch.long)
    labels[:30] = 1  # accuracy 0.7 at confidence 0.9
    assert calibration.ece(logits, labels) == pytest.approx(0.2, abs=1e-5)
    labels = torch.zeros(100, dtype=torch.long)
    labels[:10] = 1  # accuracy 0.9 at confidence 0.9: perfectly calibrated
    assert calibration.ece(logits, labels) == pytest.approx(0.0, abs=1e-5)


def test_ece_weights_bins_by_count():
    # 75 images at confidence 0.95 all right (gap 0.05), 25 at 0.55 all wrong (gap 0.55)
    logits = torch.cat([logits_with_confidence(0.95, 75), logits_with_confidence(0.55, 25)])
    labels = torch.cat([torch.zeros(75), torch.ones(25)]).long()
    assert calibration.ece(logits, labels) == pytest.approx(0.75 * 0.05 + 0.25 * 0.55, abs=1e-5)
    table = calibration.reliability(logits, labels)
    assert len(table) == 15 and table.images.sum() == 100
    assert table.images.iloc[14] == 75 and table.accuracy.iloc[14] == 1.0
    assert table.upper.iloc[-1] == 1.0 and table.lower.iloc[0] == 0.0


def test_calibration_input_errors():
    with pytest.raises(ValueError, match="expected logits"):
        calibration.ece(torch.zeros(3, 10), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one"):
        calibration.ece(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))


def test_temperature_scaling_fixes_overconfident_logits():
    gen = torch.Generator().manual_seed(0)
    n, c = 4000, 10
    labels = torch.randint(0, c, (n,), generator=gen)
    true_logits = torch.randn(n, c, generator=gen)
    true_logits[torch.arange(n), labels] += 1.5
    # sample labels from the softmax so the true logits are calibrated, then make them 3x overconfident
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=gen).squeeze(1)
    over = 3.0 * true_logits
    val, test = slice(0, 2000), slice(2000, None)
    t = calibration.fit_temperature(over[val], labels[val])
    assert t == pytest.approx(3.0, rel=0.15)
    res = calibration.before_after(over[val], labels[val], over[test], labels[test])
    assert res["nll_after"] < res["nll_before"] and res["ece_after"] < res["ece_before"]
    assert res["acc_after"] == res["acc_before"]  # temperature never changes the argmax
    assert res["val_n"] == 2000 and res["test_n"] == 2000


# ---------------------------------------------------------------------------------------
# Corruptions
# ---------------------------------------------------------------------------------------
def toy_images(n: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=gen), size=32, mode="bilinear")
    return (smooth * 200 + 25).round().to(torch.uint8)  # natural-ish images away from 0 and 255


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS)
def test_corruption_shape_dtype_determinism_and_monotonic_severity(name):
    x = toy_images()
    outs = [corruptions.corrupt(x, name, s, seed=0) for s in corruptions.SEVERITIES]
    for out in outs:
        assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(outs[2], corruptions.corrupt(x, name, 3, seed=0))  # deterministic
    dists = [distance(o, x) for o in outs]
    assert dists[0] > 0
    assert all(a < b for a, b in zip(dists, dists[1:])), dists  # stronger with severity


def test_noise_seed_changes_noise_only():
    x = toy_images()
    a, b = corruptions.corrupt(x, "gaussian_noise", 3, seed=0), corruptions.corrupt(x, "gaussian_noise", 3, seed=1)
    assert not torch.equal(a, b)
    assert distance(a, x) == pytest.approx(distance(b, x), rel=0.05)


def test_corruption_parameters_follow_cifar10c():
    # Hendrycks & Dietterich (2019) CIFAR-10-C parameters, severities 1..5
    assert corruptions.PARAMS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert corruptions.PARAMS["contrast"] == (0.75, 0.5, 0.4, 0.3, 0.15)
    assert corruptions.PARAMS["brightness"] == (0.05, 0.1, 0.15, 0.2, 0.3)
    assert corruptions.PARAMS["jpeg_compression"] == (80, 65, 58, 50, 40)


def test_corruption_semantics():
    x = toy_images(4)
    flat = torch.full((2, 3, 32, 32), 100, dtype=torch.uint8)
    assert torch.equal(corruptions.corrupt(flat, "contrast", 5), flat)       # no contrast to reduce
    assert torch.equal(corruptions.corrupt(flat, "gaussian_blur", 5), flat)  # blur of a constant image
    b = corruptions.corrupt(x, "brightness", 5)
    assert (b.float().amax(1) >= x.float().amax(1)).all()  # brighter (value channel up)
    grey = torch.full((1, 3, 4, 4), 0, dtype=torch.uint8)
    assert (corruptions.corrupt(grey, "brightness", 1) == round(0.05 * 255)).all()  # black -> grey
    c = corruptions.corrupt(x, "contrast", 5).float()
    assert c.std(dim=(2, 3)).mean() < x.float().std(dim=(2, 3)).mean() * 0.2


def test_corruption_errors():
    x = toy_images(2)
    with pytest.raises(ValueError, match="uint8"):
        corruptions.corrupt(x.float(), "contrast", 1)
    with pytest.raises(KeyError, match="unknown corruption"):
        corruptions.corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corruptions.corrupt(x, "contrast", 6)


# ---------------------------------------------------------------------------------------
# The robustness table on a toy model
# ---------------------------------------------------------------------------------------
class MeanBrightness(nn.Module):
    """Toy classifier: class = mean pixel value bucket (so brightness changes predictions)."""

    def forward(self, x):
        m = x.float().mean(dim=(1, 2, 3)) / 256 * 10
        return nn.functional.one_hot(m.long().clamp(0, 9), 10).float()


def test_evaluate_model_writes_and_reuses(artifact_root):
    images = toy_images(20)
    labels = MeanBrightness()(images).argmax(1)
    subset = data.CifarSplit(images, labels, tuple(str(i) for i in range(10)), "test")
    t = robustness.evaluate_model("toy", MeanBrightness(), "toy-run", subset, "quick")
    assert set(t.corruption) == {"clean", *corruptions.CORRUPTIONS}
    assert t[t.corruption == "clean"].acc.item() == 1.0
    assert t[(t.corruption == "brightness") & (t.severity == 5)].acc.item() < 1.0
    again = robustness.evaluate_model("toy", MeanBrightness(), "toy-run", subset, "quick")
    pd.testing.assert_frame_equal(t, again)
    assert len(list((artifact_root / "quick" / "robustness").glob("toy-*/results.csv"))) == 1
    s = robustness.summarize(t)
    assert s.loc["toy", "clean_acc"] == 1.0 and 0 <= s.loc["toy", "relative"] <= 1


def test_ece_from_predictions_equals_ece_from_logits():
    gen = torch.Generator().manual_seed(0)
    logits, labels = 3 * torch.randn(400, 10, generator=gen), torch.randint(0, 10, (400,), generator=gen)
    conf, pred = logits.softmax(1).max(1)
    assert calibration.ece_from_confidence(conf.numpy(), (pred == labels).numpy()) == pytest.approx(
        calibration.ece(logits, labels), abs=1e-6)
    with pytest.raises(ValueError, match="equal, non-zero"):
        calibration.ece_from_confidence([], [])
