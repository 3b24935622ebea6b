"""The module map holds: modules sit in stage folders whose imports run one way, the report's pure modules load no
training, model, data-loading or measuring code (a fresh interpreter, its sys.modules after the import), and
results land per profile."""

import ast
import json
import subprocess
import sys

import pandas as pd
import pytest

from studylib import config
from studylib.report import results

# Modules that train, build or load models, read the dataset, ensure runs or measure: none may load with the report.
HEAVY = ("torch", "torchvision", "studylib.runs", "studylib.data", "studylib.weights", "studylib.models",
         "studylib.recipes", "studylib.measure", "studylib.serve")


def _loaded_after(module: str) -> list[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=config.PROJ_ROOT).stdout
    return json.loads(out)


@pytest.mark.parametrize("module", ["studylib.report", "studylib.report.findings"])
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


# What loading a module may load (its module-level imports): a stage may use the foundation (studylib/*.py), its
# own and earlier stages; report and serve never load training code (recipes), and data and models nothing later.
STAGES = ["data", "models", "recipes", "measure", "report", "serve"]
MAY_NOT_IMPORT = {"data": {"models", "recipes", "measure", "report", "serve"},
                  "models": {"recipes", "measure", "report", "serve"},
                  "recipes": {"report", "serve"}, "measure": {"serve"}, "report": {"recipes"}, "serve": {"recipes"}}
ORCHESTRATION = {"dispatch", "nb", "estimate"}  # the foundation's modules that call every stage
SECTIONS = {"recipes/experiments.py"}  # the notebooks' sections: ensure runs, then measure and tabulate them


def _imports(tree: ast.AST):
    """Every import statement of a module, those inside its functions included (a lazy import is an import), except
    inside a command's entry point ``main``, which assembles the stages as the orchestration modules do."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not (isinstance(node, ast.FunctionDef) and node.name == "main"):
            yield from _imports(node)


def _imported_stages(path) -> set[str]:
    """The stage folders a module under studylib/ imports anywhere but in its ``main``."""
    rel = path.relative_to(config.PROJ_ROOT / "studylib").with_suffix("").parts
    package = ["studylib", *rel[:-1]] if rel[-1] != "__init__" else ["studylib", *rel[:-1]]
    out = set()
    for node in _imports(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
            else:
                target = (node.module or "").split(".")
            if target[:1] != ["studylib"]:
                continue
            names = [target[1]] if len(target) > 1 else [a.name for a in node.names]
            out |= {n for n in names if n in STAGES}
    return out


def test_every_module_sits_in_a_stage_and_imports_run_one_way():
    root = config.PROJ_ROOT / "studylib"
    top = sorted(p.stem for p in root.glob("*.py") if p.stem != "__init__")
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(STAGES)
    assert len(top) <= 12, f"the foundation is for shared machinery, not a stage's modules: {top}"
    wrong = []
    for stage in STAGES:
        for path in sorted(p for p in (root / stage).rglob("*.py") if str(p.relative_to(root)) not in SECTIONS):
            bad = _imported_stages(path) & MAY_NOT_IMPORT.get(stage, set())
            wrong += [f"{path.relative_to(root)} imports {sorted(bad)}"] if bad else []
    for stem in set(top) - ORCHESTRATION:
        bad = _imported_stages(root / f"{stem}.py") - {"data", "models"}
        wrong += [f"{stem}.py (foundation) imports the stage(s) {sorted(bad)}"] if bad else []
    assert wrong == []
