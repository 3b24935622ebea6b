"""The module map holds: the report's pure modules load no training, model, data-loading or measuring code (a
fresh interpreter, its sys.modules after the import), and results land per profile."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from studylib import config, results

# Modules that train, build or load models, read the dataset, ensure runs or measure: none may load with the report.
HEAVY = ("torch", "torchvision", "studylib.runs", "studylib.data", "studylib.engine", "studylib.features",
         "studylib.deploy", "studylib.weights", "studylib.models", "studylib.recipes", "studylib.evaluate",
         "studylib.measure", "studylib.experiments", "studylib.quantize")


def _loaded_after(module: str) -> list[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=config.PROJ_ROOT).stdout
    return json.loads(out)


@pytest.mark.parametrize("module", ["studylib.report", "studylib.findings"])
def test_the_report_loads_no_training_model_or_data_code(module):
    loaded = _loaded_after(module)
    assert module in loaded  # the import itself happened in that interpreter
    assert [m for m in loaded if m.split(".")[0] == "torch" or m.startswith(HEAVY)] == []


def test_results_land_per_profile_and_atomically(tmp_path):
    assert results.results_dir("quick") == config.REPORTS_DIR / "results" / "quick"
    assert results.results_dir("full") != results.results_dir("quick")
    assert results.results_dir("quick", tmp_path / "r") == tmp_path / "r"
    with pytest.raises(ValueError, match="unknown profile 'tiny'"):
        results.results_dir("tiny")
    assert results.write_csv(tmp_path, "t", pd.DataFrame({"a": [1, 2]})) is None  # a cell ending with it shows nothing
    results.write_json(tmp_path, "models/row", {"x": 1})
    assert results.read_csv(tmp_path, "t").a.tolist() == [1, 2] and results.read_csv(tmp_path, "absent") is None
    assert json.loads((tmp_path / "models" / "row.json").read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["models", "row.json", "t.csv"]  # no temp file left over
