"""The study's generated text, from results: verdicts on the reference's figures, notebook 05's findings and
the bottom line (notebook 12, the index page, the README). Pure like ``studylib.report``: every number read from
its inputs, none typed; a part that was not measured says "not measured", never a number.

    verdict([0.770, 0.775, 0.780], 48.40)   # "contradicted" only with its seed spread and margin
    bottom_line(summary)                     # the study's answer in 5-8 lines (experiments.answer_summary)
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from .. import config
from . import reference, stats


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


def evaluation(bench: pd.DataFrame, seeds: dict[str, list[float]], profile: str,
                        reference_keys: dict[str, str], no_weights: str) -> list[str]:
    """Findings of notebook 05, generated: every verdict says which recipe and how many seeds it rests on.

    ``seeds``: per row key, the test accuracies (fractions) of every finished seed of that row's recipe;
    ``reference_keys``: per row key, its row in the reference's figures; ``no_weights``: the status of a row
    without genuine pretrained weights (``deploy.NO_WEIGHTS``)."""
    ref = reference.load_reference()["models"]
    out = []
    if not config.comparable(profile):
        out.append(f"**{profile} profile**: a small subset and a tiny budget that show the pipeline runs; its numbers "
                   "are not comparable with the reference's, so no verdicts on them are drawn.")
    ok = bench.dropna(subset=["Accuracy (%)"]) if "Accuracy (%)" in bench else bench.iloc[0:0]
    by_key = ok.reset_index().set_index("key")
    for key in ("custom_cnn", "custom_cnn_refcode", "vit_small", "vit_small_refcode", "mobilenet_v2"):
        if key not in by_key.index or not config.comparable(profile):
            continue
        r, pub = by_key.loc[key], ref[reference_keys[key]]["test_acc_pct"]
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
    not_run = [label for label, row in bench.iterrows() if row["Status"] == no_weights]
    if not_run:
        out.append(f"Not run (no genuine pretrained weights obtainable offline): {', '.join(not_run)}; their reference "
                   "figures are shown, not reproduced.")
    if "CPU Latency fp32 (ms)" in ok and ok["CPU Latency fp32 (ms)"].notna().any():
        lat = ok["CPU Latency fp32 (ms)"]
        out.append(f"Batch-1 CPU latency (fp32, with preprocessing): from {lat.min():.1f} ms ({lat.idxmin()}) to "
                   f"{lat.max():.1f} ms ({lat.idxmax()}).")
    return out


def int8(summary: pd.DataFrame, goal: dict) -> str:
    """One finding from ``measure.int8_summary``: which rows have an INT8 path within ``goal["max_loss_points"]``
    of fp32 that is ``goal["speedup"]`` x faster at batch 1, and the best the others reached."""
    if summary.empty:
        return "INT8: not measured."
    batch = next(c for c in summary.columns if c.startswith("Speed-up, batch ") and c != "Speed-up, batch 1")
    met = summary[summary["Meets the goal at batch 1"]]
    rest = summary.drop(met.index)

    def show(label: str, r) -> str:
        return (f"{label} ({r['INT8 path']}: {r['Δ accuracy (points)']:+.2f} points, {r['Speed-up, batch 1']:.2f}x at "
                f"batch 1, {r[batch]:.2f}x at {batch.removeprefix('Speed-up, ')})")

    out = (f"INT8 against PyTorch fp32 (the path of choice per row: the fastest static one within "
           f"{goal['max_loss_points']:g} point of fp32): {len(met)} of {len(summary)} rows reach "
           f"{goal['speedup']:g}x at batch 1")
    out += (": " + "; ".join(show(label, r) for label, r in met.iterrows()) + "." if len(met) else ".")
    if len(rest):
        out += " Below it: " + "; ".join(show(label, r) for label, r in rest.iterrows()) + "."
    return out


def _pct(x: float | None) -> str:
    return "not measured" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _diff(row: dict | None) -> str:
    """"+3.21 points (95% CI …; McNemar p …)" or "not measured"."""
    return "not measured" if not row else stats.format_difference(row)


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
