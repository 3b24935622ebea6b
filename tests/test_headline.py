import json

import pytest

from studylib.report import headline


def _results(tmp_path):
    res = tmp_path / "published" / "results" / "full"  # run_all.py's layout: <report>/results/<profile>
    res.mkdir(parents=True)
    rows = [{"Model": "Custom CNN", "Strategy": "from scratch", "Status": "ok", "Accuracy (%)": 77.5,
             "CI low (%)": 76.67, "CI high (%)": 78.31, "Reference Accuracy (%)": 48.4, "Trainable Params": 2462282,
             "Total Params": 2462282, "CPU Latency fp32 (ms)": 3.21, "Trained on": "cpu (AMD EPYC, 2 threads)"},
            {"Model": "ResNet-18", "Strategy": "frozen ImageNet backbone + linear head",
             "Status": "not run: no pretrained weights", "Accuracy (%)": float("nan"),
             "Reference Accuracy (%)": 87.48, "Trainable Params": 5130, "Total Params": 11181642}]
    env = {"profile": "full", "cpu": "Test CPU", "threads": 2, "torch": "2.14.1"}
    (res / "benchmark.json").write_text(json.dumps({"environment": env, "rows": rows}))
    (res.parent.parent / "timings.json").write_text(json.dumps({"total_seconds": 600, "notebooks": [
        {"notebook": "01", "seconds": 60}, {"notebook": "05", "seconds": 540}]}))
    return res


def test_table_from_results(tmp_path):
    table = headline.table(_results(tmp_path))
    assert ("| Custom CNN | from scratch | **77.50%** (76.67–78.31) | 48.40% | 2,462,282 / 2,462,282 | 3.2 ms | "
            "cpu (AMD EPYC, 2 threads) | ok |") in table
    assert "| ResNet-18 |" in table and "| – | 87.48% | 5,130 / 11,181,642 | – | – | not run: no pretrained weights |" in table
    assert "**10.0 min** wall time (per notebook, min: 01 1.0, 05 9.0)" in table and "Test CPU, 2 threads" in table


def test_readme_rewrite_and_check(tmp_path):
    res = _results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{headline.START}\nold table\n{headline.END}\noutro\n")
    assert headline.main(["--results", str(res), "--readme", str(readme), "--check"]) == 1
    assert headline.main(["--results", str(res), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text and "77.50%" in text
    assert headline.main(["--results", str(res), "--readme", str(readme), "--check"]) == 0
    with pytest.raises(ValueError, match="markers"):
        headline.updated_readme("no markers", "x")
    with pytest.raises(FileNotFoundError, match="run_all.py --publish"):
        headline.table(tmp_path / "nowhere")


def test_committed_readme_matches_committed_report():
    if not (headline.DEFAULT_RESULTS / "benchmark.json").exists():
        pytest.skip("no published report committed yet")
    assert headline.main(["--check"]) == 0, "README headline table is stale: run python -m studylib.report.headline"


def test_int8_table_from_results(tmp_path):
    """The README's INT8 table: the VNNI paths of each row (not fp32, eager PT2E or dynamic), the path of choice
    marked; rewritten between its own markers, and only where the README has them."""
    import pandas as pd

    res = _results(tmp_path)
    cols = ["key", "Model", "Variant", "Δ accuracy (points)", "Speed-up", "Speed-up, batch 64",
            "Speed-up vs fp32, same engine", "Chosen INT8 path"]
    pd.DataFrame([["m", "MobileNetV2", "fp32", 0.0, 1.0, 1.0, 1.0, False],
                  ["m", "MobileNetV2", "int8 static", -0.4, 0.5, 0.5, 0.5, False],
                  ["m", "MobileNetV2", "int8 static, onnxruntime (QDQ, U8S8)", -1.47, 3.54, 1.68, 1.26, False],
                  ["m", "MobileNetV2", "int8 static, PT2E + torch.compile (oneDNN)", -0.6, 1.71, 2.84, 1.71, True]],
                 columns=cols).to_csv(res / "int8.csv", index=False)
    block = headline.int8(res)
    assert "| MobileNetV2 | PT2E + torch.compile (oneDNN) | -0.60 | 1.71 | 2.84 | 1.71 | **yes** |" in block
    assert "| MobileNetV2 | onnxruntime (QDQ, U8S8) | -1.47 | 3.54 | 1.68 | 1.26 |  |" in block
    assert block.count("| MobileNetV2 |") == 2 and "batch 64" in block.splitlines()[0]
    readme = tmp_path / "README.md"
    readme.write_text(f"{headline.START}\n{headline.END}\nmid\n{headline.INT8_START}\nold\n{headline.INT8_END}\nend\n")
    assert headline.main(["--results", str(res), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and "**yes**" in text and text.endswith("end\n") and "\nmid\n" in text
