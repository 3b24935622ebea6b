"""Copy the headline table and the INT8 table from a rendered report's results into the README (never by hand).

    python -m studylib.report.headline                 # rewrite README.md from reports/published/results/full
    python -m studylib.report.headline --check         # exit 1 when README.md differs from the results

Each table sits between two marker comments in README.md (the INT8 one only where the README has its markers);
everything else is left alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .. import artifacts, config

START, END = "<!-- headline:start -->", "<!-- headline:end -->"
INT8_START, INT8_END = "<!-- int8:start -->", "<!-- int8:end -->"
DEFAULT_RESULTS = config.REPORTS_DIR / "published" / "results" / "full"  # <report>/results/<profile>
README = config.PROJ_ROOT / "README.md"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value, fmt: str, unit: str = "") -> str:
    return "–" if _missing(value) else format(value, fmt) + unit


def answer(results_dir: Path = DEFAULT_RESULTS) -> str:
    """The generated bottom line of ``results_dir/bottom_line.json`` (written by notebook 12), or ""."""
    path = Path(results_dir) / "bottom_line.json"
    return "\n".join(json.loads(path.read_text())["lines"]) + "\n" if path.exists() else ""


def table(results_dir: Path = DEFAULT_RESULTS) -> str:
    """The markdown headline table of ``results_dir/benchmark.json`` (written by notebook 05)."""
    path = Path(results_dir) / "benchmark.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: render the report first (python run_all.py --publish)")
    bench = json.loads(path.read_text())
    env = bench["environment"]
    lines = ["| Model | Strategy | Test accuracy (95% CI) | Reference (published) | Trainable / total params | "
             "CPU latency, batch 1, fp32 | Trained on | Status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in bench["rows"]:
        acc = r.get("Accuracy (%)")
        measured = "–" if _missing(acc) else f"**{acc:.2f}%** ({r['CI low (%)']:.2f}–{r['CI high (%)']:.2f})"
        trained = r.get("Trained on")
        lines.append(f"| {r['Model']} | {r['Strategy']} | {measured} | {_num(r.get('Reference Accuracy (%)'), '.2f', '%')} | "
                     f"{_num(r.get('Trainable Params'), ',.0f')} / {_num(r.get('Total Params'), ',.0f')} | "
                     f"{_num(r.get('CPU Latency fp32 (ms)'), '.1f', ' ms')} | {'–' if _missing(trained) else trained} | "
                     f"{r['Status']} |")
    lines.append("")
    timings = Path(results_dir).parent.parent / "timings.json"  # the report's: <report>/results/<profile>/..
    if timings.exists():
        t = json.loads(timings.read_text())
        per_nb = ", ".join(f"{r['notebook']} {r['seconds'] / 60:.1f}" for r in t["notebooks"])
        lines.append(f"Report rendered in **{t['total_seconds'] / 60:.1f} min** wall time (per notebook, min: {per_nb}); "
                     "finished training runs are reused, not re-timed (each row's training device is in the table).")
        lines.append("")
    lines.append(f"Measured by the committed report's run ({env['profile']} profile; accuracy re-evaluated and latency "
                 f"timed on {env['cpu']}, {env['threads']} threads, torch {env['torch']}). Reference = the reference "
                 "study's published figure (where each comes from: `studylib/report/reference.json`). Copied from "
                 f"`{config.display_path(Path(results_dir) / 'benchmark.json')}` by `python -m studylib.report.headline`.")
    return "\n".join(lines)


def int8(results_dir: Path = DEFAULT_RESULTS) -> str:
    """The markdown INT8 table of ``results_dir/int8.csv`` (notebook 05): per row its static INT8 paths that target
    VNNI (ONNX Runtime's QDQ, PT2E under torch.compile), accuracy change and speed-ups, the path of choice marked."""
    import pandas as pd

    path = Path(results_dir) / "int8.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: render the report first (python run_all.py --publish)")
    t = pd.read_csv(path)
    batch = next(c for c in t.columns if c.startswith("Speed-up, batch"))
    lines = [f"| row | INT8 path | Δ accuracy (points) | vs PyTorch fp32, batch 1 | {batch.removeprefix('Speed-up, ')} |"
             " vs fp32 in the same engine, batch 1 | path of choice |", "|---|---|---|---|---|---|---|"]
    shown = t[t.Variant.str.contains("onnxruntime|torch.compile") & t.Variant.str.startswith("int8 static")]
    for _, r in shown.iterrows():
        lines.append(f"| {r['Model']} | {r['Variant'].removeprefix('int8 static, ')} | "
                     f"{r['Δ accuracy (points)']:+.2f} | {r['Speed-up']:.2f} | {r[batch]:.2f} | "
                     f"{r['Speed-up vs fp32, same engine']:.2f} | {'**yes**' if r['Chosen INT8 path'] else ''} |")
    lines += ["", f"Copied from `{config.display_path(path)}` by `python -m studylib.report.headline`; the machine is "
              "the headline table's."]
    return "\n".join(lines)


def updated_readme(text: str, block: str, start: str = START, end: str = END) -> str:
    if start not in text or end not in text:
        raise ValueError(f"README.md has no {start} ... {end} markers to put the table between")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--check", action="store_true", help="only check that the README is up to date")
    args = ap.parse_args(argv)
    text = args.readme.read_text()
    new = updated_readme(text, answer(args.results) + "\n" + table(args.results))
    if INT8_START in text:
        new = updated_readme(new, int8(args.results), INT8_START, INT8_END)
    if args.check:
        if new != text:
            print(f"{args.readme} is out of date with {args.results}; run python -m studylib.report.headline", file=sys.stderr)
            return 1
        print(f"{args.readme} matches {args.results}")
        return 0
    if new != text:
        artifacts.write_bytes(args.readme, new.encode())
    print(f"headline table written to {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
