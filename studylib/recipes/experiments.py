"""Every part of the study that makes sure runs exist: the notebooks' sections (trained when this mode
trains, else reused, or reported missing with the command that computes them) and the drivers over the
recipes' jobs. Nothing here is displayed; the tables and text are ``studylib.report``'s, the measurements
``studylib.measure``'s. The plan (``studylib.dispatch``) calls the same functions to list what a notebook needs.

    sec = scratch_section("custom_cnn", "full")          # notebooks 02 / 04
    grid = grid_section("full"); budget = budget_section("full")   # notebooks 10 / 12
    curve = efficiency_curve("full")                      # notebook 09's curves, every kind of point

    python -m studylib.recipes.experiments --profile full [--only rows seeds data_efficiency calibration resolution]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import config, measure, report, runs, runtime, weights
from ..measure import calibration, flops
from ..models import backbones
from ..report import findings, reference, stats
from ..serve import deploy
from . import features, finetune, heads, scratch, strong, tuning


def ensure_all(jobs: dict) -> dict:
    """``ensure`` every job of a {cell: [Job]} dict; the finished runs per cell."""
    return {k: [r for r in (j.ensure() for j in v) if r.done] for k, v in jobs.items()}


# ---------------------------------------------------------------------------------------
# Notebooks 02 / 04 (scratch), 03 (transfer), 08 (strong recipe)
# ---------------------------------------------------------------------------------------
def row_job(row: deploy.Row, profile: str, *, data_dir=None, device: str = "auto", weights_dir=None) -> runs.Job:
    """The training job of a reference row of the benchmark table (a scratch model, a frozen-backbone head); raises
    ``weights.WeightsUnavailable`` for a head without ImageNet weights. Keying it reads CIFAR-10; loading the row
    (``deploy.find_run``) needs neither the dataset nor this module."""
    if row.best:
        raise ValueError(f"{row.key} is deployed from a selected finished run (deploy.select_run), not one job; "
                         f"train it with {row.command(profile)!r}")
    if row.scratch:
        return scratch.job(row.model, row.recipe, profile, data_dir=data_dir, device=device)
    return heads.row_job(row.model, profile, row.recipe, data_dir=data_dir, device=device, weights_dir=weights_dir)


def finished_seeds(name: str, recipe: str, profile: str) -> list:
    """Every finished full-data scratch run of ``name`` under ``recipe`` (all seeds), as Runs."""
    t = runs.table(profile, "scratch", name, **{"recipe.name": recipe, "subset.per_class": None})
    return [] if t.empty else list(t.sort_values("seed").run)


def scratch_section(name: str, profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """Both recipes' runs of scratch model ``name`` (trained here when this mode trains, else reused or
    reported missing with their command), beside the reference's published figure.

    Returns {"runs": {recipe: Run}, "table": DataFrame, "deviations": DataFrame, "seeds": {recipe: [Run]}}."""
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
        v = (findings.verdict([s.metrics["test_acc"] for s in seeds[recipe]], ref["test_acc_pct"])
             if config.comparable(profile) else {})  # a smoke profile's numbers say nothing about the reference's
        rows.append({"recipe": label, "status": "ok", "seed": m["seed"],
                     "test acc (%)": report.accuracy_interval_text(m["test_acc"], m["test_n"]),
                     "seeds finished": len(seeds[recipe]),
                     "mean ± std over seeds (%)": (f"{v['mean_pct']:.2f} ± {v['std_pts']:.2f}"
                                                   if v and v["seeds"] > 1 else "—"),
                     "reference (%)": ref["test_acc_pct"], "verdict on the reference's figure": v.get("verdict", "—"),
                     "params": m["params_total"], "epochs": m["epochs"], "steps": m["steps"],
                     "train min": round(m["train_seconds"] / 60, 1), "trained on": runtime.device_label(m),
                     "torch": m["environment"]["torch"], "precision": m["precision"]})
    return {"runs": out_runs, "seeds": seeds, "table": pd.DataFrame(rows).set_index("recipe"),
            "deviations": report.deviations_table(models=[name]), "reference": ref}


def transfer_section(profile: str, *, data_dir=None, device: str = "auto", weights_dir=None) -> dict:
    """Every transfer row (frozen backbone + linear head, no augmentation) and, for backbones with
    weights, the reference code's flip variant, each trained when this mode trains (else reused or
    reported missing); the variant compared with the plain head on the same test images."""
    rows, runs_, flips, comparisons = [], {}, {}, []
    ref = reference.load_reference()["models"]
    for name in deploy.backbones.TRANSFER_MODELS:
        r = ref.get(name, {})
        try:
            job = heads.row_job(name, profile, "head", data_dir=data_dir, device=device, weights_dir=weights_dir)
        except weights.WeightsUnavailable as exc:
            counts = deploy.ROW[name].architecture_counts()
            rows.append({"model": deploy.LABELS[name], "status": deploy.NO_WEIGHTS, "reason": "; ".join(exc.reasons),
                         "reference (%)": r.get("test_acc_pct"), "trainable": counts["trainable"],
                         "total": counts["total"], "weights": report.WEIGHTS_NOTES[name]})
            continue
        run = runs_[name] = job.ensure()
        if not run.done:
            rows.append({"model": deploy.LABELS[name], "status": f"not run here: {job.command}"})
            continue
        m = run.metrics
        feats = m.get("features", {})
        rows.append({"model": deploy.LABELS[name], "status": "ok",
                     "test acc (%)": report.accuracy_interval_text(m["test_acc"], m["test_n"]),
                     "reference (%)": r.get("test_acc_pct"), "trainable": m["params_trainable"], "total": m["params_total"],
                     "feature extraction s": round(sum(f.get("seconds", 0) for f in feats.values())),
                     "head train s": round(m["train_seconds"], 1), "weights": f"{m['weights']['file']}: "
                     f"{report.WEIGHTS_NOTES[name]}", "sha256": m["weights"]["sha256"][:16] + "…"})
        fjob = heads.row_job(name, profile, "head_reference_code", data_dir=data_dir, device=device,
                             weights_dir=weights_dir)
        flip = flips[name] = fjob.ensure()
        if flip.done:
            c = report.paired_row(f"{deploy.LABELS[name]}, plain head", [run], f"{deploy.LABELS[name]}, flip head", [flip])
            comparisons.append({**c, "model": name})
    table = pd.DataFrame(rows).set_index("model")
    flip_table = pd.DataFrame([{"model": deploy.LABELS[c["model"]], "plain head (%)": 100 * c["acc_a_mean"],
                                "flip head, reference code (%)": 100 * c["acc_b_mean"],
                                "difference": stats.format_difference(c), "n01": c["n01"], "n10": c["n10"]}
                               for c in comparisons])
    return {"table": table, "runs": runs_, "flip_runs": flips, "flip_table": flip_table.set_index("model")
            if len(flip_table) else flip_table, "comparisons": comparisons}


def calibration_section(profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """Probe calibration (heads trained without a held-out validation split, T fitted on it; recorded in
    each run) and the uncalibrated ECE of every scratch row and the strong recipe (from predictions)."""
    g = config.grid("calibration", profile)
    cal = pd.DataFrame(calibration_runs(profile, data_dir=data_dir, device=device))
    scratch_rows = []
    runs_ = {deploy.LABELS[k]: row_job(deploy.ROW[k], profile, data_dir=data_dir).run
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


def resolution_section(profile: str, *, data_dir=None, device: str = "auto") -> pd.DataFrame:
    """Linear-probe accuracy per (backbone, input size) on the resolution grid, with the backbone's
    feature-extraction speed at that size timed on this machine (sizes one after another in one process,
    cached per machine: a fair comparison on a shared machine). One row per probe run."""
    g = config.grid("resolution", profile)
    rows = []
    for (name, size), (feats, jobs) in heads.resolution_jobs(profile, data_dir=data_dir, device=device).items():
        done = [(seed, run) for seed, job in jobs if (run := job.ensure()).done]
        if not done:  # nothing to show at this size: its extraction is not timed either
            continue
        batch = features.batch_for(size, device=runtime.resolve_device(device))
        machine = {**measure.cpu_info(), "name": name, "size": size, "images": g["timing_images"], "batch": batch}
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


def random_baseline_note(profile: str) -> str:
    """What the random-init frozen cell measures, from the grid's configuration and the network itself."""
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


def grid_section(profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """The controlled grid (recipes/finetune.py): per-seed table, per-cell summary, the cells' configs
    and the paired tests between cells. Missing runs are trained when this mode trains."""
    jobs = finetune.cell_jobs(profile, data_dir=data_dir, device=device, train=runs.training_allowed())
    done, lab = ensure_all(jobs), finetune.CELL_LABELS
    cell = lambda t, i: (lab[(t, i)], done.get((t, i), []))  # noqa: E731
    tests = report.paired_tests([(*cell("probe", "random"), *cell("probe", "imagenet")),
                                 (*cell("finetune", "random"), *cell("finetune", "imagenet")),
                                 (*cell("probe", "imagenet"), *cell("finetune", "imagenet")),
                                 (*cell("probe", "random"), *cell("finetune", "random"))])
    grid = finetune.table(jobs)
    lrs = {i: jobs[("finetune", i)][0].run.key["recipe"]["optimizer"]["lr"] if jobs.get(("finetune", i)) else None
           for i in finetune.INITS}  # the rates that ran (chosen by each row's search)
    configs = {f"{t}/{i}": finetune.cell_config(t, i, profile, lr=lrs[i] if t == "finetune" else None)
               for t, i in finetune.CELLS}
    return {"grid": grid, "summary_table": report.grid_summary(grid) if len(grid) else grid, "tests": report.with_holm(tests),
            "runs": done, "configs": configs,
            "differences": {t: finetune.describe_differences(finetune.config_differences(
                configs[f"{t}/imagenet"], configs[f"{t}/random"])) for t in ("probe", "finetune")},
            "missing": [j.command for v in jobs.values() for j in v if not j.run.done]}


def training_gflop_per_image(profile: str) -> float:
    """GFLOP of one training step per image (forward + backward) of the grid's network at the grid's size."""
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
    jobs = finetune.budget_jobs(profile, data_dir=data_dir, device=device, train=runs.training_allowed())
    done = ensure_all(jobs)
    gflop = training_gflop_per_image(profile)
    rows = [{"epochs": epochs, "init": init, "seed": r.metrics["seed"], "test_acc": r.metrics["test_acc"],
             "train_acc": finetune.train_accuracy(r), "train_seconds": r.metrics["train_seconds"],
             "cpu_hours": r.metrics["train_seconds"] / 3600 if r.metrics["device"] == "cpu" else np.nan,
             "gflop": gflop * r.metrics["train_n"] * epochs, "device": runtime.device_label(r.metrics), "run": r.id}
            for (init, epochs), rs in done.items() for r in rs]
    table = pd.DataFrame(rows, columns=BUDGET_COLUMNS).sort_values(["epochs", "init", "seed"], ignore_index=True)
    epochs = sorted({e for _, e in done})
    gaps = report.paired_tests([(f"random init, {e} epochs", done.get(("random", e), []),
                                 f"ImageNet init, {e} epochs", done.get(("imagenet", e), [])) for e in epochs])
    gaps.insert(0, "epochs", [int(a.split(", ")[-1].split()[0]) for a in gaps.a])  # "random init, 30 epochs" -> 30
    return {"table": table, "gaps": gaps, "runs": done,
            "missing": [j.command for v in jobs.values() for j in v if not j.run.done]}


def efficiency_section(profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """ImageNet vs random init on the grid's network at small training sets (frozen and end to end):
    per-seed table (with step counts) and paired tests at each size."""
    g = config.grid("controlled", profile)
    jobs = finetune.efficiency_jobs(profile, data_dir=data_dir, device=device, train=runs.training_allowed())
    done, lab = ensure_all(jobs), finetune.CELL_LABELS
    tests = report.paired_tests([(f"{lab[(t, 'random')]}, {pc * 10:,} images", done[(t, "random", pc)],
                                  f"{lab[(t, 'imagenet')]}, {pc * 10:,} images", done[(t, "imagenet", pc)])
                                 for t in ("probe", "finetune") for pc in g["efficiency_per_class"]
                                 if (t, "random", pc) in done and (t, "imagenet", pc) in done])
    return {"table": finetune.table(jobs), "tests": tests, "runs": done,
            "missing": [j.command for v in jobs.values() for j in v if not j.run.done]}


def answer_summary(grid: dict, eff: dict, strong: dict | None, profile: str, budget: dict | None = None) -> dict:
    """What ``bottom_line`` needs, read from the sections' tables (see its docstring); ``budget``: the
    ``budget_section`` (its gaps per budget)."""
    g, lab, t = config.grid("controlled", profile), finetune.CELL_LABELS, grid["grid"]
    tests = {r["comparison"]: r for r in grid["tests"].to_dict("records")}
    eff_tests = {r["comparison"]: r for r in eff["tests"].to_dict("records")}
    smallest = min(g["efficiency_per_class"])
    cells = {}
    for tr, init in finetune.CELLS:
        sel = t[(t.training == tr) & (t.init == init)] if len(t) else t
        cells[f"{tr}/{init}"] = report.cell_summary(sel.test_acc.tolist(), sel.compute_seconds.tolist()) if len(sel) \
            else report.cell_summary([])
    vs = lambda a, b, table: table.get(f"{b} vs {a}")  # noqa: E731
    small = {tr: vs(f"{lab[(tr, 'random')]}, {smallest * 10:,} images", f"{lab[(tr, 'imagenet')]}, {smallest * 10:,} "
                    "images", eff_tests) for tr in ("probe", "finetune")}
    searches = {i: finetune.lr_search(i, profile, train=False) for i in finetune.INITS}
    done_search = [x for x in searches.values() if len(x)]
    out = {"network": deploy.LABELS[g["backbone"]], "size": g["size"], "epochs": config.recipe("finetune", profile)["epochs"],
           "differences": grid.get("differences", {}),
           "lr_search": {"epochs": int(done_search[0].epochs.iloc[0]), "train_n": int(done_search[0].train_n.iloc[0]),
                         "steps": int(done_search[0].steps.iloc[0])} if done_search else {},
           "train_images": int(t.train_images.max()) if len(t) else 0, "cells": cells,
           "init_effect": {tr: vs(lab[(tr, "random")], lab[(tr, "imagenet")], tests) for tr in ("probe", "finetune")},
           "small": {"train_images": smallest * 10, **small}}
    if strong and strong["summary"]["seeds"]:
        out["strong"] = strong["summary"]
        out["strong_vs"] = {tr: report.paired_row(*pair) if pair[3] else None
                            for tr, pair in zip(("probe", "finetune"), strong_pairs(grid, strong))}
    if budget is not None:  # records, not a DataFrame: the summary is written to bottom_line.json
        out["budget_gaps"] = budget["gaps"].to_dict("records")
    return out


def strong_pairs(grid: dict, strong: dict) -> list[tuple[str, list, str, list]]:
    """The ImageNet cells of the grid against the strong scratch recipe, for paired_row / paired_tests:
    (strong recipe, its finished runs, ImageNet cell, its finished runs) for the probe, then the fine-tune
    (b - a: how far the ImageNet cell lies above the best scratch recipe)."""
    done = lambda rs: [r for r in rs if r.done]  # noqa: E731
    return [("strong recipe (no TTA)", done(strong["runs"]), finetune.CELL_LABELS[(tr, "imagenet")],
             done(grid["runs"].get((tr, "imagenet"), []))) for tr in ("probe", "finetune")]


def strong_section(profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """The strong recipe's seeds (trained when this mode trains): no-TTA accuracy as the primary number,
    TTA as a variant, beside the Custom CNN's recipes (paired tests on the same test images, no TTA)."""
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
    tests = report.paired_tests([(f"Custom CNN, {config.RECIPES[rec]['label']}", cnn[rec], "strong recipe (no TTA)", done)
                                 for rec in scratch.RECIPES])
    summ = report.cell_summary([r.metrics["test_acc"] for r in done], [r.metrics["train_seconds"] for r in done])
    if done:
        summ["tta_mean"] = float(np.mean([r.metrics["test_acc_tta"] for r in done]))
    return {"runs": done, "table": pd.DataFrame(rows), "missing": missing, "tests": tests, "summary": summ}


# ---------------------------------------------------------------------------------------
# Notebooks 09-11: probes over seeds, data efficiency, calibration
# ---------------------------------------------------------------------------------------
def _with_weights(names, profile: str, *, data_dir=None, device: str = "auto"):
    """(name, Features) of each backbone of ``names`` with genuine ImageNet weights; the others are printed as
    not run (with the command that gets their weights) and left out."""
    for name in names:
        feats = heads.available_features(name, profile, data_dir=data_dir, device=device, progress=False)
        if feats is not None:
            yield name, feats


def seeds_table(profile: str, names=config.PROBES, *, data_dir=None, device: str = "auto",
                train: bool = True) -> pd.DataFrame:
    """Study-row heads over the experiment's seeds (all training images): one row per head."""
    rows = []
    for name, feats in _with_weights(names, profile, data_dir=data_dir, device=device):
        for seed in config.grid("seeds", profile)["seeds"]:
            job = heads.head_job(feats, "head", profile, seed=seed, device=device, progress=False)
            run = job.ensure() if train else job.run
            if run.done:
                rows.append(_head_row(run, seed=seed))
    return pd.DataFrame(rows)


def _head_row(run: runs.Run, **extra) -> dict:
    m = run.metrics
    return {"model": m["model"], "test_acc": m["test_acc"], "train_images": m.get("train_images", m["train_n"]),
            "test_n": m["test_n"], "steps": m["steps"], "train_seconds": m["train_seconds"], "device": m["device"],
            "run": run.id, **extra}


def data_efficiency_table(profile: str, names=config.PROBES, *, data_dir=None, device: str = "auto") -> pd.DataFrame:
    """Probe test accuracy per (backbone, images per class, seed) on the data-efficiency grid."""
    g = config.grid("data_efficiency", profile)
    rows = []
    for name, feats in _with_weights(names, profile, data_dir=data_dir, device=device):
        for per_class in g["train_per_class"]:
            for seed in g["seeds"]:
                run = heads.head_job(feats, "head", profile, seed=seed, per_class=per_class,
                                     min_epoch_images=g["min_epoch_images"], device=device, progress=False).ensure()
                if run.done:  # not trained here (no-training mode, or another process owns it): left out
                    rows.append(_head_row(run, seed=seed, per_class=per_class))
    return pd.DataFrame(rows)


def calibration_runs(profile: str, names=config.PROBES, *, data_dir=None, device: str = "auto") -> list[dict]:
    """Per backbone and seed: a head trained without the validation split, T fitted on that split,
    test ECE / NLL before and after and the reliability tables (calibration.report, in the run's metrics)."""
    g = config.grid("calibration", profile)
    out = []
    for name, feats in _with_weights(names, profile, data_dir=data_dir, device=device):
        for seed in g["seeds"]:
            run = heads.head_job(feats, "head", profile, seed=seed, val_fraction=g["val_fraction"], device=device,
                                 progress=False, kind="calibration").ensure()
            if run.done:
                out.append({"model": name, "seed": seed, **run.metrics["calibration"], "run": run.id})
    return out


def efficiency_points(profile: str, *, data_dir=None, device: str = "auto") -> dict[tuple[str, int, int], runs.Job]:
    """Notebook 09's from-scratch data-efficiency points: {(curve label, images per class, seed): Job} for the
    Custom CNN (study recipe) and the strong recipe on the grid's stratified subsets."""
    g, s = config.grid("data_efficiency", profile), config.grid("strong", profile)
    kw = dict(data_dir=data_dir, device=device)
    cnn = {("Custom CNN (study recipe)", pc, seed): scratch.job("custom_cnn", "study", profile, seed=seed, per_class=pc,
                                                                min_epoch_images=g["min_epoch_images"], **kw)
           for pc in g["train_per_class"] for seed in g["scratch_seeds"]}
    best = {("strong recipe (no TTA)", pc, seed): strong.job(profile, seed=seed, per_class=pc,
                                                             min_epoch_images=s["min_epoch_images"], **kw)
            for pc in g["train_per_class"] for seed in s["seeds"]}
    return {**cnn, **best}


def efficiency_curve(profile: str, *, data_dir=None, device: str = "auto") -> dict:
    """Notebook 09's curves: every kind of point against labelled training images (the probes on the
    data-efficiency grid, the from-scratch points, the grid network's ImageNet / random pairs with their
    full-data points: ``finetune.efficiency_full_jobs``), each point ensured. Returns {"points": one row per run,
    "curve": report.curve of them, "efficiency": efficiency_section}."""
    kw = dict(data_dir=data_dir, device=device)
    probes = data_efficiency_table(profile, **kw)
    if len(probes):
        probes = probes.assign(label=probes.model.map(deploy.LABELS) + " probe (224 px)")
    done = {k: j.ensure() for k, j in efficiency_points(profile, **kw).items()}
    scratch_points = pd.DataFrame([{"label": k[0], "train_images": r.metrics["train_images"], "seed": r.metrics["seed"],
                                    "test_acc": r.metrics["test_acc"], "steps": r.metrics["steps"],
                                    "device": r.metrics["device"]} for k, r in done.items() if r.done])
    eff = efficiency_section(profile, **kw)
    full = finetune.efficiency_full_jobs(profile, train=runs.training_allowed(), **kw)  # the pairs' 50,000-image points
    ensure_all(full)
    grid_points = pd.concat([eff["table"], finetune.table(full)], ignore_index=True).assign(
        label=lambda d: d.cell + " (grid network)")
    columns = ["label", "train_images", "seed", "test_acc", "steps", "device"]
    found = [t[columns] for t in (probes, scratch_points, grid_points) if len(t)]
    points = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=columns)
    return {"points": points, "curve": report.curve(points), "efficiency": eff}


# ---------------------------------------------------------------------------------------
# Notebook 12: the learning-rate searches behind the grid's end-to-end rows
# ---------------------------------------------------------------------------------------
def lr_searches(profile: str, *, data_dir=None, device: str = "auto") -> pd.DataFrame:
    """Every init's learning-rate search (finetune.lr_search; trained when this mode trains), one row per rate,
    with ``chosen`` (the rate a finished search picked; none while it runs), ``interior`` (whether that choice is
    inside its grid) and ``finished`` (``tuning.complete``)."""
    tables = []
    for i in finetune.INITS:
        t = finetune.lr_search(i, profile, train=runs.training_allowed(), data_dir=data_dir, device=device)
        tables.append(t.assign(chosen=t.lr == finetune.choose_lr(t), interior=finetune.lr_choice(t)["interior"],
                               finished=tuning.complete(t)))
    return pd.concat(tables, ignore_index=True)


# ---------------------------------------------------------------------------------------
# The heads' command line: every head on frozen features, as the notebooks ensure them
# ---------------------------------------------------------------------------------------
def main(argv=None) -> None:
    """Train (or reuse) the transfer rows and every probe of notebooks 03 and 09-11 (the heads on frozen features)."""
    ap = runs.command_parser(main.__doc__, argv)
    ap.add_argument("--only", nargs="*", choices=("rows", "seeds", "data_efficiency", "calibration", "resolution"),
                    default=("rows", "seeds", "data_efficiency", "calibration", "resolution"))
    args = runs.parse_command(ap, argv)
    if "rows" in args.only:
        for name in backbones.TRANSFER_MODELS:
            for recipe in ("head", "head_reference_code"):
                try:
                    run = heads.row_job(name, args.profile, recipe, device=args.device).ensure(train=True)
                except weights.WeightsUnavailable as exc:
                    print(f"{name}: not run: {exc}")
                    break
                print(f"{name} ({recipe}): {100 * run.metrics['test_acc']:.2f}%", flush=True)
    if "seeds" in args.only:
        print(seeds_table(args.profile, device=args.device).groupby("model").test_acc.agg(["mean", "std", "count"]))
    if "data_efficiency" in args.only:
        t = data_efficiency_table(args.profile, device=args.device)
        print(t.groupby(["model", "train_images"]).test_acc.agg(["mean", "std", "count"]))
    if "calibration" in args.only:
        rows = pd.DataFrame([{k: v for k, v in r.items() if k != "reliability"}
                             for r in calibration_runs(args.profile, device=args.device)])
        print(rows.groupby("model")[["temperature", "ece_before", "ece_after", "nll_before", "nll_after"]].mean())
    if "resolution" in args.only:
        for (name, size), (_, jobs) in heads.resolution_jobs(args.profile, device=args.device).items():
            for seed, job in jobs:
                print(f"{name} at {size} px, seed {seed}: {100 * job.ensure(train=True).metrics['test_acc']:.2f}%", flush=True)


if __name__ == "__main__":
    main()
