import json
import re
import subprocess
import sys

import nbformat
import pytest

import run_all
from studylib import config


def test_unknown_parameter_rejected():
    with pytest.raises(SystemExit, match=r"unknown parameter\(s\) \['sede'\]"):
        run_all.main(["--only", "01", "-p", "sede=1"])


def test_wrong_parameter_type_rejected():
    with pytest.raises(SystemExit, match="seed='x' is str.*declares it as int"):
        run_all.main(["--only", "01", "-p", "seed='x'"])


def test_unknown_only_rejected():
    with pytest.raises(SystemExit, match="--only 99"):
        run_all.main(["--only", "99"])


def test_every_notebook_has_clean_parameters_cell():
    for nb_path in sorted(config.NOTEBOOKS_DIR.glob(run_all.NOTEBOOK_GLOB)):
        nb = nbformat.read(nb_path, as_version=4)
        assert "profile" in run_all.declared_parameters(nb_path), nb_path.name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{nb_path.name} has outputs"


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


@pytest.mark.e2e
def test_quick_pipeline_end_to_end(quick_models, tmp_path):
    # Every notebook on the quick profile, on the session's quick store: the scratch and transfer
    # runs the store already holds are reused (the same functions the notebooks call trained them),
    # everything else (evaluation, confusion, demo, the extra experiments) is computed here.
    out = tmp_path / "reports"
    proc = subprocess.run([sys.executable, str(config.PROJ_ROOT / "run_all.py"), "--profile", "quick",
                           "--reports-dir", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Timing summary" in proc.stdout
    html01 = (out / "01_data.html").read_text()
    assert "0.4914, 0.4822, 0.4465" in html01 and "image/png" in html01  # computed mean + the class grid
    executed = nbformat.read(out / "01_data.ipynb", as_version=4)
    assert any("quick" in str(c.source) for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    index = (out / "index.html").read_text()
    for nb_path in sorted(config.NOTEBOOKS_DIR.glob(run_all.NOTEBOOK_GLOB)):
        assert nb_path.with_suffix(".html").name in index
        assert (out / nb_path.with_suffix(".html").name).exists()
    timings = json.loads((out / "timings.json").read_text())
    assert all(row["status"] == "ok" and row["summary"] for row in timings["notebooks"])  # every notebook summarised
    assert re.search(r"custom_cnn \(quick profile\): \d+\.\d\d% test accuracy \(500 images, 2 epochs", index)
    assert "3,195,146" in (out / "04_vit.html").read_text()
    results = out / "results"
    bench = json.loads((results / "benchmark.json").read_text())
    rows = {r["key"]: r for r in bench["rows"]}
    assert rows["resnet18"]["Status"] == "not run: no pretrained weights" and rows["resnet18"]["Total Params"] == 11181642
    assert rows["custom_cnn"]["Status"] == "ok" and rows["custom_cnn"]["CI low (%)"] < rows["custom_cnn"]["Accuracy (%)"]
    assert (results / "models" / "mobilenet_v2.json").exists() and (results / "int8.csv").exists()
    assert (results / "confusion_pairs.csv").read_text().count("\n") == 6  # header + top-5 pairs
    assert "Provenance" in index and "sha256" in index and "ImageNet weights" in index


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
