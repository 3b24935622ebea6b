#!/usr/bin/env python
"""Run the study: execute the numbered notebooks in order with papermill, render HTML.

    python run_all.py                      # the full reference protocol
    python run_all.py --profile quick      # the whole pipeline in minutes
    python run_all.py --only 01 03         # a subset, by number prefix
    python run_all.py -p seed=0 -p force=True

Executed notebooks and one HTML per notebook land in reports/, with reports/index.html
linking them in order. Stops at the first failing notebook and names it and the cell.
"""

from __future__ import annotations

import argparse
import ast
import html
import platform
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
from nbconvert import HTMLExporter

from studylib import artifacts, config

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"


def discover(only: list[str] | None) -> list[Path]:
    notebooks = sorted(config.NOTEBOOKS_DIR.glob(NOTEBOOK_GLOB))
    if not notebooks:
        raise SystemExit(f"no numbered notebooks found in {config.NOTEBOOKS_DIR}")
    if only:
        unknown = [o for o in only if not any(nb.name.startswith(o) for nb in notebooks)]
        if unknown:
            raise SystemExit(f"--only {' '.join(unknown)}: no notebook starts with that; "
                             f"have {[nb.name for nb in notebooks]}")
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(o) for o in only)]
    return notebooks


def parse_params(pairs: list[str]) -> dict:
    """``key=value`` pairs; values are Python literals when they parse as one, else strings."""
    params = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise SystemExit(f"-p {pair!r}: expected key=value with a Python identifier as key")
        try:
            params[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[key] = raw
    return params


def declared_parameters(nb: Path) -> dict[str, dict]:
    return {p["name"]: p for p in pm.inspect_notebook(str(nb)).values()}


def check_params(notebooks: list[Path], params: dict) -> dict[Path, dict]:
    """Per notebook, the subset of ``params`` it declares. A key no notebook declares, or a
    value whose type differs from the notebook's default, is an error (before anything runs)."""
    per_nb: dict[Path, dict] = {}
    declared_anywhere: set[str] = set()
    for nb in notebooks:
        declared = declared_parameters(nb)
        if not declared:
            raise SystemExit(f"{nb.name} has no cell tagged 'parameters'; every study notebook needs one.")
        declared_anywhere |= set(declared)
        per_nb[nb] = {}
        for key, value in params.items():
            if key not in declared:
                continue
            default = ast.literal_eval(declared[key]["default"])
            expected = type(default)
            if not isinstance(value, expected) and not (expected is float and isinstance(value, int)):
                raise SystemExit(f"parameter {key}={value!r} is {type(value).__name__}, but {nb.name} "
                                 f"declares it as {expected.__name__} (default {default!r}).")
            per_nb[nb][key] = value
    unknown = sorted(set(params) - declared_anywhere)
    if unknown:
        raise SystemExit(f"unknown parameter(s) {unknown}: no selected notebook declares them; "
                         f"known: {sorted(declared_anywhere)}")
    return per_nb


def notebook_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def notebook_summary(nb: nbformat.NotebookNode) -> str:
    """First line printed by the cell tagged 'summary' (computed by the run, never typed)."""
    for cell in nb.cells:
        if "summary" in cell.get("metadata", {}).get("tags", []):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("text", "").strip():
                    return out["text"].strip().splitlines()[0]
    return ""


def render_html(executed: Path, target: Path) -> None:
    body, _ = HTMLExporter(embed_images=True).from_filename(str(executed))
    artifacts.write_bytes(target, body.encode())


def write_index(rows: list[dict], profile: str, total_s: float, out: Path) -> None:
    import torch

    items = []
    for r in rows:
        link = f'<a href="{html.escape(r["html"])}">{html.escape(r["title"])}</a>'
        status = "ok" if r["status"] == "ok" else f'<b style="color:#b00">{html.escape(r["status"])}</b>'
        items.append(f"<tr><td>{html.escape(r['notebook'])}</td><td>{link}</td><td>{html.escape(r['summary'])}</td>"
                     f"<td>{status}</td><td style='text-align:right'>{r['seconds']:.1f}</td></tr>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>CIFAR-10: pretrained vs scratch ({profile})</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} td,th{{padding:4px 10px;border-bottom:1px solid #ddd;vertical-align:top}}</style>
</head><body>
<h1>How much does a pretrained ImageNet backbone help on CIFAR-10?</h1>
<p>Profile <b>{html.escape(profile)}</b>. Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on
{html.escape(platform.processor() or platform.machine())}, Python {platform.python_version()},
torch {torch.__version__}, {torch.get_num_threads()} threads. Total wall time {total_s:.1f} s.</p>
<table><tr><th>#</th><th>Notebook</th><th>Summary (computed by this run)</th><th>Status</th><th>Seconds</th></tr>
{''.join(items)}
</table></body></html>
"""
    artifacts.write_bytes(out, page.encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full")
    ap.add_argument("--only", nargs="+", metavar="NN", help="run only notebooks whose name starts with these")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="notebook parameter passed through papermill (repeatable)")
    ap.add_argument("--download", action="store_true", help="download CIFAR-10 with torchvision if it is absent")
    ap.add_argument("--reports-dir", type=Path, default=config.REPORTS_DIR)
    args = ap.parse_args(argv)

    params = parse_params(args.param)
    if "profile" in params:
        raise SystemExit("set the profile with --profile, not -p profile=...")
    params["profile"] = args.profile
    if args.download:
        params["download"] = True
    notebooks = discover(args.only)
    per_nb = check_params(notebooks, params)

    out_dir = args.reports_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, t_start, failed = [], time.perf_counter(), None
    for i, nb_path in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {nb_path.name}  profile={args.profile}  {per_nb[nb_path]}", flush=True)
        executed = out_dir / nb_path.name
        html_name = nb_path.with_suffix(".html").name
        t0 = time.perf_counter()
        status = "ok"
        try:
            pm.execute_notebook(str(nb_path), str(executed), parameters=per_nb[nb_path],
                                cwd=str(config.NOTEBOOKS_DIR), progress_bar=True, log_output=False)
        except pm.PapermillExecutionError as exc:
            first_line = (exc.source or "").strip().splitlines()[0][:80] if (exc.source or "").strip() else ""
            status = (f"failed in cell {exc.cell_index} of the executed notebook ({first_line!r}): "
                      f"{exc.ename}: {exc.evalue}")
            failed = f"{nb_path.name} {status}"
        seconds = time.perf_counter() - t0
        nb = nbformat.read(str(executed), as_version=4)
        render_html(executed, out_dir / html_name)
        rows.append({"notebook": nb_path.name[:2], "title": notebook_title(nb, nb_path.stem), "html": html_name,
                     "summary": notebook_summary(nb), "status": status, "seconds": seconds})
        print(f"    {status}  {seconds:.1f} s  -> {out_dir / html_name}", flush=True)
        if failed:
            break
    total = time.perf_counter() - t_start
    write_index(rows, args.profile, total, out_dir / "index.html")
    artifacts.write_json(out_dir / "timings.json", {"profile": args.profile, "total_seconds": total, "notebooks": rows})

    print("\nTiming summary")
    for r in rows:
        print(f"  {r['notebook']}  {r['seconds']:8.1f} s  {r['status'] if r['status'] != 'ok' else ''}")
    print(f"  total {total:8.1f} s   report: {out_dir / 'index.html'}")
    if failed:
        print(f"\nFAILED: {failed}\nSee {out_dir / rows[-1]['html']} for the traceback.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
