#!/usr/bin/env python
"""Run the study: execute the numbered notebooks in order with papermill, render HTML.

    python run_all.py                      # the full study from the shipped runs (runs/): no training
    python run_all.py --retrain            # train everything from scratch into the artifact store
    python run_all.py --retrain 02 03      # retrain only what these notebooks train
    python run_all.py --profile quick      # the whole pipeline in minutes on a small subset (smoke test)
    python run_all.py --only 01 05         # a subset of notebooks, by number prefix
    python run_all.py --full-check         # 05 re-evaluates every shipped model on all 10,000 test images (CI)
    python run_all.py --retrain --plan     # every unfinished run the report needs: command, estimate, waits for
    python run_all.py --retrain --executor local --workers 1 --wait   # the plan in worker processes, then the report
    python run_all.py --retrain --executor slurm --slurm-partition gpu --slurm-gpus 1   # the plan as SLURM job arrays

Executed notebooks and one HTML per notebook land in reports/, with reports/index.html leading
with the study's answer. Stops at the first failing notebook and names it and the cell.
"""

from __future__ import annotations

import argparse
import ast
import base64
import html
import io
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill as pm
from nbconvert import HTMLExporter

from jupyter_client.manager import AsyncKernelManager
from traitlets import default

from studylib import artifacts, config, dispatch, estimate, runs, runtime, ship
from studylib.report import provenance

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"


class IPCKernelManager(AsyncKernelManager):
    """Kernels talk over local IPC sockets: no TCP port, so no "running over TCP without encryption"
    warning at every notebook start."""

    @default("transport")
    def _default_transport(self):
        return "ipc"


class Indented:
    """A stream that writes a notebook's stdout to the terminal as it arrives (per-epoch progress lines
    included), indented under the notebook's line."""

    def __init__(self, stream, prefix: str = "    | "):
        self.stream, self.prefix, self.at_line_start = stream, prefix, True

    def write(self, text: str) -> None:
        for part in text.splitlines(keepends=True):
            if self.at_line_start:
                self.stream.write(self.prefix)
            self.stream.write(part)
            self.at_line_start = part.endswith("\n")

    def flush(self) -> None:
        self.stream.flush()


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


def render_html(executed: Path, target: Path, hide_code: bool = False, nav: str = "") -> None:
    """One self-contained HTML page (figures embedded); ``hide_code`` drops the input cells so
    readers see narrative, tables and figures only; ``nav`` (``nav_html``) goes at its top and bottom."""
    exporter = HTMLExporter(embed_images=True, exclude_input=hide_code, exclude_input_prompt=hide_code,
                            exclude_output_prompt=hide_code)
    body, _ = exporter.from_filename(str(executed))
    if hide_code:
        body = compress_pngs(body)
    artifacts.write_bytes(target, with_nav(body, nav).encode())


def nav_html(notebooks: list[Path], current: Path) -> str:
    """Previous / index / next links between the report's pages (every numbered notebook, in order)."""
    names = [nb.name for nb in notebooks]
    i = names.index(current.name)
    link = lambda nb, text: f'<a href="{html.escape(nb.with_suffix(".html").name)}">{html.escape(text)}</a>'  # noqa: E731
    parts = [link(notebooks[i - 1], f"← {notebooks[i - 1].stem}") if i > 0 else "",
             '<a href="index.html">index</a>',
             link(notebooks[i + 1], f"{notebooks[i + 1].stem} →") if i + 1 < len(notebooks) else ""]
    return ('<nav style="font-family:sans-serif;margin:0.6em 1em">' + " · ".join(p for p in parts if p)
            + "</nav>")


def with_nav(page: str, nav: str) -> str:
    """``page`` with ``nav`` right after its <body> tag and right before </body>."""
    if not nav:
        return page
    start = page.find(">", page.find("<body")) + 1
    end = page.rfind("</body>")
    return page[:start] + nav + page[start:end] + nav + page[end:]


PNG_DATA = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=\n]+)")


def compress_pngs(page: str) -> str:
    """Re-encode every embedded PNG figure as a 256-colour palette PNG (about 3-4x smaller for
    plots and image grids; kept only where it is smaller), so the committed report stays a few MB."""
    from PIL import Image

    def shrink(match: re.Match) -> str:
        raw = base64.b64decode(match.group(1))
        img = Image.open(io.BytesIO(raw))
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return match.group(0) if buf.tell() >= len(raw) else "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    return PNG_DATA.sub(shrink, page)


def provenance_html(info: dict) -> str:
    """The report's statement about itself: machine, data by content hash, weights and devices per row."""
    m, d = info["machine"], info["data"]
    rows = []
    for r in info["rows"]:
        w = r.get("weights")
        weights_cell = ("—" if "weights" not in r else
                        "none obtainable here" if not w else f"{w['file']} ({w['source']}), sha256 {w['sha256'][:16]}…")
        trained = (f"{r.get('trained_on', '')}, torch {r.get('torch')}"
                   + (f", CUDA {r['cuda']}, cuDNN {r['cudnn']}" if r.get("cuda") and "cuda" in r.get("trained_on", "")
                      else "") + f", {r.get('precision')}; {r.get('source', '')}") if r.get("trained_on") else ""
        rows.append(f"<tr><td>{html.escape(r['label'])}</td><td>{html.escape(r['status'])}</td>"
                    f"<td>{html.escape(weights_cell)}</td><td>{html.escape(trained)}</td></tr>")
    return f"""<h2>Provenance</h2>
<p>Rendered on: {html.escape(m['cpu'])} ({html.escape(m['cpu_capability'])}, {m['logical_cpus']} logical CPUs),
{m['threads']} torch threads, torch {html.escape(m['torch'])}, Python {platform.python_version()}.
Data: {html.escape(d['folder'])} (found via {html.escape(d['found_via'])}); content hash train {d['train']['sha256_12']}
({d['train']['images']:,} images), test {d['test']['sha256_12']} ({d['test']['images']:,} images).
Artifact store: {html.escape(info['artifacts'])}; shipped runs: runs/ ({info.get('shipped_files', 0)} files checked
against runs/MANIFEST.json).</p>
<table><tr><th>Row</th><th>Status</th><th>ImageNet weights</th><th>Trained on</th></tr>{''.join(rows)}</table>
"""


def answer_html(out_dir: Path, profile: str) -> str:
    """The top of the index page: the generated bottom line (notebook 12), the headline table (05) and the
    controlled grid's figure, read from this report's results (``results/<profile>/``); absent parts say which
    notebook writes them."""
    from studylib.report import headline

    parts = []
    results_dir = out_dir / "results" / profile
    bottom = results_dir / "bottom_line.json"
    if bottom.exists():
        lines = json.loads(bottom.read_text())["lines"]
        parts.append('<div class="answer">' + markdown_lines(lines) + "</div>")
    else:
        parts.append("<p><i>The answer is written by notebook 12 (12_findings); it has not run in this report.</i></p>")
    figure = first_figure(out_dir / "12_findings.html")
    if figure:
        parts.append(f'<img alt="the controlled grid" style="max-width:100%" src="{figure}">')
    try:
        parts.append("<h2>Benchmark table</h2>" + markdown_lines(headline.table(results_dir).splitlines()))
    except FileNotFoundError:
        parts.append("<p><i>The benchmark table is written by notebook 05; it has not run in this report.</i></p>")
    return "\n".join(parts)


def markdown_lines(lines: list[str]) -> str:
    """The few markdown forms the generated text uses (bold, bullet lists, pipe tables) as HTML."""
    out, in_list, table = [], False, []

    def inline(t: str) -> str:
        t = html.escape(t)
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)

    def flush_table():
        if table:
            head, *body = [[c.strip() for c in row.strip("|").split("|")] for row in table if not set(row) <= set("|-")]
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            table.clear()

    for line in lines:
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{inline(line[2:])}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush_table()
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def first_figure(page: Path) -> str | None:
    """The first embedded PNG of a rendered notebook page (a data: URI), or None."""
    if not page.exists():
        return None
    m = re.search(r'<img[^>]*src="(data:image/png;base64,[^"]+)"', page.read_text())
    return m.group(1).replace("\n", "") if m else None


# Words the report uses without defining them on each page (a reader asked for them on the index)
GLOSSARY = {
    "probe (linear probe)": "a linear classifier trained on the features of a frozen network: it measures how "
                            "linearly separable the classes are in those features; the network itself is not trained",
    "points": "percentage points: the difference of two accuracies given in percent, not a relative change",
    "TTA": "test-time augmentation: each test image is also classified flipped and the predictions averaged; shown "
           "as a variant, never as the primary number",
    "ECE": "expected calibration error: how far the model's confidence is from its accuracy, averaged over "
           "confidence bins (0% is perfectly calibrated)",
    "PT2E": "PyTorch 2 Export quantization (torch.export, then torchao's x86 quantizer): how the INT8 models are built",
    "bf16": "bfloat16, a 16-bit floating-point format with float32's range; training runs under bf16 autocast "
            "where a recipe says so",
    "airbench": "Keller Jordan's fast CIFAR-10 training recipes (Jordan 2024, arXiv 2404.00498); the strong "
                "from-scratch recipe here (notebook 08) follows airbench94",
}


def glossary_html() -> str:
    return ("<h2>Glossary</h2><dl>" + "".join(f"<dt><b>{html.escape(k)}</b></dt><dd>{html.escape(v)}</dd>"
                                              for k, v in GLOSSARY.items()) + "</dl>")


def write_index(rows: list[dict], profile: str, total_s: float, out: Path, provenance_block: str = "",
                mode: str = "") -> None:
    import torch

    items = []
    for r in rows:
        link = f'<a href="{html.escape(r["html"])}">{html.escape(r["title"])}</a>'
        status = "ok" if r["status"] == "ok" else f'<b style="color:#b00">{html.escape(r["status"])}</b>'
        items.append(f"<tr><td>{html.escape(r['notebook'])}</td><td>{link}</td><td>{html.escape(r['summary'])}</td>"
                     f"<td>{status}</td><td style='text-align:right'>{r['seconds']:.1f}</td></tr>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>CIFAR-10: pretrained vs scratch ({profile})</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} td,th{{padding:4px 10px;border-bottom:1px solid #ddd;vertical-align:top}}
.answer{{background:#f4f7fb;border-left:4px solid #2b6cb0;padding:0.5em 1.2em}}</style>
</head><body>
<h1>How much does a pretrained ImageNet backbone help on CIFAR-10?</h1>
{answer_html(out.parent, profile)}
<h2>The notebooks</h2>
<p>Profile <b>{html.escape(profile)}</b> ({html.escape(mode)}). Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}
with Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads.
Total wall time {total_s / 60:.1f} min.</p>
<table><tr><th>#</th><th>Notebook</th><th>Summary (computed by this run)</th><th>Status</th><th>Seconds</th></tr>
{''.join(items)}
</table>
{glossary_html()}
{provenance_block}
<p>Machine-readable results: <a href="results/{html.escape(profile)}/">results/{html.escape(profile)}/</a>. Timings: <a href="timings.json">timings.json</a>.</p>
</body></html>
"""
    artifacts.write_bytes(out, page.encode())


def notebook_mode(profile: str, retrain: list[str] | None, notebook: str, executor: str | None = None) -> tuple[str, str]:
    """One notebook's run mode (its ``mode`` parameter, runs.MODES) and how the index describes it: whether shipped
    runs count and whether its kernel may train (never after an executor ran the plan: the report renders from
    what its jobs finished)."""
    retraining = dispatch.retraining(retrain, notebook)
    if executor:
        return ("store" if retraining else "shipped"), f"rendering what the {executor} executor's jobs finished"
    if retraining:
        return "retrain", "retraining into the artifact store"
    if config.shipped(profile):
        return "shipped", "shipped runs, no training"
    return "train", "training what is missing"


def add_dispatch_options(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("plan and executors (README, \"On a cluster\")")
    g.add_argument("--plan", action="store_true", help="list every unfinished run the selected notebooks need "
                   "(id, kind, notebook, command, estimate here, what it waits for) and stop")
    g.add_argument("--json", action="store_true", help="with --plan: the plan as JSON")
    g.add_argument("--executor", choices=("local", "slurm"), default=None,
                   help="compute the plan through submitit: local worker processes, or SLURM job arrays")
    g.add_argument("--workers", type=int, default=1, help="local executor: worker processes (default 1: on 2 cores "
                   "two heavy jobs slow each other several-fold)")
    g.add_argument("--wait", action="store_true", help="follow the executor's jobs, then render the report")
    g.add_argument("--no-wait", action="store_true", help="a run another process is computing is skipped (and "
                   "said so) instead of waited for")
    g.add_argument("--slurm-partition", default=None)
    g.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per job (default 0: CPU only)")
    g.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per job")
    g.add_argument("--slurm-mem-gb", type=int, default=16, help="memory per job, GB")
    g.add_argument("--slurm-time-margin", type=float, default=2.0,
                   help="time limit = the estimate on this machine x this + 10 min")
    g.add_argument("--slurm-array-parallelism", type=int, default=64, help="tasks of one array running at once")
    g.add_argument("--slurm-account", default=None)
    g.add_argument("--slurm-qos", default=None)
    g.add_argument("--slurm-constraint", default=None)


def run_plan(args, argv: list[str], notebooks: list[Path], params: dict) -> int | None:
    """--plan prints the plan; --executor computes it (returns the exit status unless the report renders next)."""
    def plan() -> dispatch.Plan:
        return dispatch.build_plan(args.profile, [nb.name for nb in notebooks], args.retrain,
                                   data_dir=params.get("data_dir") or None, device=params.get("device", "auto"),
                                   weights_dir=params.get("weights_dir") or None)

    current = plan()
    if args.plan and args.json:
        print(json.dumps(current.to_json(), indent=2))
        return 0
    print(dispatch.format_plan(current), flush=True)
    if args.plan:
        return 0
    if args.executor == "local":
        failed = dispatch.run_local(current, workers=args.workers, replan=plan)
    else:
        opts = dispatch.SlurmOptions(partition=args.slurm_partition, gpus=args.slurm_gpus, cpus=args.slurm_cpus,
                                     mem_gb=args.slurm_mem_gb, time_margin=args.slurm_time_margin,
                                     array_parallelism=args.slurm_array_parallelism, account=args.slurm_account,
                                     qos=args.slurm_qos, constraint=args.slurm_constraint)
        # without --wait, a job after the arrays plans again and submits what the searches unlocked
        again = None if args.wait else [sys.executable, str(Path(__file__).resolve()), *argv]
        failed, seen = [], set()
        while current.items and not {i.id for i in current.items} <= seen:
            seen |= {i.id for i in current.items}
            jobs = dispatch.submit_slurm(current, opts, again)
            if not args.wait:
                print(f"job states and logs: {config.display_path(dispatch.dispatch_dir())}; render the report from "
                      f"what has finished with: python run_all.py --profile {args.profile} ...", flush=True)
                return 0
            failed += dispatch.follow(jobs)
            current = plan()
    if failed:
        print(f"\n{len(failed)} job(s) failed or were skipped: {', '.join(failed)}; logs in "
              f"{config.display_path(dispatch.dispatch_dir() / 'jobs')}. Run the same command again: finished runs are "
              "skipped, unfinished ones resume from their checkpoints.", file=sys.stderr, flush=True)
    if not args.wait:
        return 1 if failed else 0
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CELL_FRAME = re.compile(r"^(?:Cell In ?\[[^\]]*\]|Input In ?\[[^\]]*\]), line (\d+)", re.M)


def failing_line(source: str | None, traceback: list[str] | None) -> str:
    """The cell line that raised, from IPython's traceback: its first frame in the cell ("Cell In[3], line 8";
    later frames of the cell are inside functions it calls), the cell's first line when none is found."""
    lines = (source or "").splitlines()
    m = _CELL_FRAME.search(_ANSI.sub("", "\n".join(traceback or [])))
    n = int(m[1]) if m else 0
    line = lines[n - 1] if 0 < n <= len(lines) else next((x for x in lines if x.strip()), "")
    return line.strip()[:100]


def merge_previous_rows(rows: list[dict], timings: Path, profile: str, total: float) -> tuple[list[dict], float]:
    """``rows`` (notebooks just run) plus the rows of ``timings`` (the report's previous render of the same
    profile) for notebooks not run now, in notebook order; the total is then the sum over all rows."""
    if not timings.exists():
        return rows, total
    prev = json.loads(timings.read_text())
    if prev.get("profile") != profile:
        return rows, total
    ran = {r["notebook"] for r in rows}
    merged = sorted([r for r in prev["notebooks"] if r["notebook"] not in ran] + rows, key=lambda r: r["notebook"])
    return merged, sum(r["seconds"] for r in merged)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full")
    ap.add_argument("--only", nargs="+", metavar="NN", help="run only notebooks whose name starts with these")
    ap.add_argument("--retrain", nargs="*", metavar="NN", default=None,
                    help="train from scratch into the artifact store instead of using the shipped runs (all "
                         "notebooks, or only these); never overwrites runs/")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="notebook parameter passed through papermill (repeatable)")
    ap.add_argument("--download", action="store_true", help="download CIFAR-10 with torchvision if it is absent")
    ap.add_argument("--full-check", action="store_true",
                    help="notebook 05 re-evaluates every deployed model on the whole test set (CI does), instead "
                         "of a fixed stratified sample with every prediction identical to the recorded one")
    ap.add_argument("--reports-dir", type=Path, default=None,
                    help="where the report goes (default reports/, or reports/published with --publish)")
    ap.add_argument("--publish", action="store_true",
                    help="the committed report: code cells hidden, executed notebooks not kept (a few MB)")
    add_dispatch_options(ap)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    os.environ.update(runtime.allocator_env())  # the notebooks' kernels and the executors' jobs start with it
    if args.json and not args.plan:
        raise SystemExit("--json prints the plan: use it with --plan")
    if args.wait and not args.executor:
        raise SystemExit("--wait follows an executor's jobs: add --executor local or --executor slurm")
    if args.workers < 1:
        raise SystemExit(f"--workers {args.workers}: at least one worker process is needed")
    if args.no_wait:
        runs.set_mode(wait=False)  # the executors' jobs get --no-wait; the notebooks, wait=False
    if args.reports_dir is None:
        args.reports_dir = config.REPORTS_DIR / "published" if args.publish else config.REPORTS_DIR

    params = parse_params(args.param)
    if "profile" in params:
        raise SystemExit("set the profile with --profile, not -p profile=...")
    if {"mode", "wait"} & set(params):
        raise SystemExit("the run mode follows the options: --retrain (retrain into the store), --executor (render "
                         "what its jobs finished), --no-wait (skip a run another process holds); not -p mode=/wait=")
    params["profile"] = args.profile
    if args.download:
        params["download"] = True
    if args.full_check:
        params["full_check"] = True
    notebooks, all_notebooks = discover(args.only), discover(None)  # pages link to every page, even when not re-run
    if config.shipped(args.profile) and args.retrain is None and not args.publish \
            and any("compile_int8" in declared_parameters(nb) for nb in notebooks):
        # the default render reads the PT2E-compiled INT8 measurements shipped for this machine kind; on another kind
        # it leaves those rows out rather than compile them (minutes); --publish measures them
        params["compile_int8"] = False
    per_nb = check_params(notebooks, params)
    if config.shipped(args.profile) and args.retrain is None:
        try:
            print(f"{ship.verify_manifest()} shipped files match runs/MANIFEST.json", flush=True)
        except ship.ShippedRunError as exc:
            raise SystemExit(f"error: {exc}")
    if args.plan or args.executor:
        status = run_plan(args, argv, notebooks, params)
        if status is not None:
            return status
    elif args.retrain is not None:
        print(estimate.format_table(estimate.stages(args.profile, [nb.name for nb in notebooks], args.retrain)),
              flush=True)

    out_dir = args.reports_dir.resolve()
    for nb_path, nb_params in per_nb.items():  # machine-readable results go next to the HTML, one folder per profile
        if "results_dir" in declared_parameters(nb_path) and "results_dir" not in params:
            # relative to the notebooks' working folder: the report never shows this machine's absolute path
            nb_params["results_dir"] = os.path.relpath(out_dir / "results" / args.profile, config.NOTEBOOKS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch_dir = Path(tempfile.mkdtemp(prefix="run_all_")) if args.publish else out_dir
    rows, t_start, failed, modes = [], time.perf_counter(), None, set()
    for i, nb_path in enumerate(notebooks, 1):
        mode, described = notebook_mode(args.profile, args.retrain, nb_path.name, args.executor)
        modes.add(described)
        if "mode" in declared_parameters(nb_path):
            per_nb[nb_path].update(mode=mode, wait=not args.no_wait)
        print(f"[{i}/{len(notebooks)}] {nb_path.name}  profile={args.profile}  ({described})", flush=True)
        if runs.MODES[mode][1]:
            runtime.check_machine_load(nb_path.name)
        executed = (scratch_dir if args.publish else out_dir) / nb_path.name
        html_name = nb_path.with_suffix(".html").name
        t0 = time.perf_counter()
        status = "ok"
        try:
            pm.execute_notebook(str(nb_path), str(executed), parameters=per_nb[nb_path], cwd=str(config.NOTEBOOKS_DIR),
                                progress_bar=False, log_output=False, stdout_file=Indented(sys.stdout),
                                kernel_manager_class=IPCKernelManager)
        except pm.PapermillExecutionError as exc:
            status = (f"failed in cell {exc.cell_index} of the executed notebook "
                      f"({failing_line(exc.source, exc.traceback)!r}): {exc.ename}: {exc.evalue}")
            failed = f"{nb_path.name} {status}"
        seconds = time.perf_counter() - t0
        nb = nbformat.read(str(executed), as_version=4)
        render_html(executed, out_dir / html_name, hide_code=args.publish, nav=nav_html(all_notebooks, nb_path))
        rows.append({"notebook": nb_path.name[:2], "title": notebook_title(nb, nb_path.stem), "html": html_name,
                     "summary": notebook_summary(nb), "status": status, "seconds": seconds})
        print(f"    {status}  {seconds:.1f} s  -> {config.display_path(out_dir / html_name)}", flush=True)
        if failed:
            break
    total = time.perf_counter() - t_start
    if args.publish:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    info = {}
    try:
        info = provenance.collect(args.profile, params.get("data_dir") or None, params.get("weights_dir") or None)
        prov = provenance_html(info)
    except Exception as exc:  # the report still gets written; it says why provenance is missing
        prov = f"<h2>Provenance</h2><p>could not be collected: {html.escape(repr(exc))}</p>"
    if args.only:  # a partial re-render keeps the other notebooks' rows of the same report
        rows, total = merge_previous_rows(rows, out_dir / "timings.json", args.profile, total)
    # timings first: the index's table footer reads this render's total from timings.json
    artifacts.write_json(out_dir / "timings.json", {"profile": args.profile, "total_seconds": total, "notebooks": rows,
                                                    "provenance": info, "mode": sorted(modes)})
    write_index(rows, args.profile, total, out_dir / "index.html", prov, "; ".join(sorted(modes)))

    print("\nTiming summary")
    for r in rows:
        print(f"  {r['notebook']}  {r['seconds']:8.1f} s  {r['status'] if r['status'] != 'ok' else ''}")
    print(f"  total {total:8.1f} s   report: {config.display_path(out_dir / 'index.html')}")
    if failed:
        print(f"\nFAILED: {failed}\nSee {config.display_path(out_dir / rows[-1]['html'])} for the traceback.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
