import ast
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import set_run_mode
import torch

from studylib import artifacts, config, runs, ship


# ----------------------------------------------------------------------------- configuration
def test_profiles_and_recipes_overlay_strictly():
    full, quick = config.get_profile("full"), config.get_profile("quick")
    assert full["train_per_class"] is None and quick["train_per_class"] == 100 and quick["profile"] == "quick"
    assert quick["evaluation"]["threads"] == full["evaluation"]["threads"]  # nested dicts merge, not replace
    study = config.recipe("study")
    assert study["epochs"] == 15 and study["batch_size"] == 128 and study["optimizer"]["lr"] == 1e-3
    assert config.recipe("study", "quick")["epochs"] == 2 and config.recipe("study", seed=0)["seed"] == 0
    assert config.recipe("finetune", optimizer={"lr": 3e-4})["optimizer"] == {"name": "adam", "lr": 3e-4,
                                                                             "weight_decay": 1e-4}
    assert config.grid("controlled", "quick")["size"] == 32 and config.grid("controlled")["size"] == 64


def test_configuration_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        config.get_profile("fast")
    with pytest.raises(KeyError, match="unknown key 'epoch' for recipe 'study'"):
        config.recipe("study", epoch=3)
    with pytest.raises(TypeError, match="recipe 'study'.epochs expects int, got str"):
        config.recipe("study", epochs="3")
    with pytest.raises(KeyError, match="unknown recipe 'studdy'"):
        config.recipe("studdy")
    with pytest.raises(KeyError, match="unknown experiment"):
        config.grid("resolutions")
    with pytest.raises(KeyError, match="unknown key 'subset_seeds' for protocol"):
        config.get_profile("full", subset_seeds=1)


def test_no_profile_branches_outside_config():
    """Per-profile settings are attributes of config.PROFILES (``config.comparable``, ``config.shipped``): no
    module, run_all.py or notebook compares a profile with one of its names."""
    names = "|".join(map(re.escape, config.PROFILES))
    branch = re.compile(rf"""(?:==|!=)\s*\\?["'](?:{names})\\?["']|\\?["'](?:{names})\\?["']\s*(?:==|!=)""")
    files = [*(config.PROJ_ROOT / "studylib").rglob("*.py"), config.PROJ_ROOT / "run_all.py",
             *config.NOTEBOOKS_DIR.glob("*.ipynb")]
    offenders = [f"{p.name}: {m.group(0)}" for p in files for m in branch.finditer(p.read_text())]
    assert offenders == []
    assert branch.search('if profile != "full":') and branch.search("x = 'quick' == profile")


def test_profiles_declare_their_attributes():
    for name in config.PROFILES:
        assert isinstance(config.comparable(name), bool) and isinstance(config.shipped(name), bool)
    assert config.comparable("full") and config.shipped("full") and not config.shipped("quick")
    with pytest.raises(ValueError, match="unknown profile 'tiny'"):
        config.comparable("tiny")


def test_display_path_hides_machine_paths(monkeypatch, tmp_path):
    monkeypatch.setenv(config.ARTIFACTS_DIR_ENV, str(tmp_path / "store"))
    assert config.display_path(tmp_path / "store" / "full" / "x") == f"${config.ARTIFACTS_DIR_ENV}/full/x"
    assert config.display_path(config.PROJ_ROOT / "reports" / "index.html") == "reports/index.html"
    assert config.display_path("/somewhere/else/file.txt") == "file.txt"


# ----------------------------------------------------------------------------- atomic writes, hashing
def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    artifacts.write_bytes(target, b"old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        artifacts.atomic_write(target, boom)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]


def test_hashes_are_stable_and_sensitive():
    assert artifacts.hash_obj({"a": 1, "b": 2}) == artifacts.hash_obj({"b": 2, "a": 1})
    assert artifacts.hash_obj({"a": 1}) != artifacts.hash_obj({"a": 2})
    t = torch.arange(6, dtype=torch.uint8)
    assert artifacts.hash_tensor(t) == artifacts.hash_tensor(t.clone())
    assert artifacts.hash_tensor(t) != artifacts.hash_tensor(t.reshape(2, 3))
    assert artifacts.hash_tensor(torch.tensor(3)) != artifacts.hash_tensor(torch.tensor(4))  # 0-d tensors too
    # the bytes hashed are the tensor's: pinned to a digest computed independently (run keys never move)
    x = torch.tensor([[1.5, -2.0], [0.25, 3.0]], dtype=torch.bfloat16).t()  # non-contiguous, 2-byte elements
    expected = hashlib.sha256(b"torch.bfloat16(2, 2)" + x.contiguous().view(torch.int16).numpy().tobytes()).hexdigest()
    assert artifacts.hash_tensor(x, length=64) == expected


def test_a_tensor_hash_is_remembered_until_the_tensor_changes():
    t = torch.arange(6, dtype=torch.uint8)
    first = artifacts.hash_tensor(t)
    assert artifacts.hash_tensor(t) == first and t._study_sha256[1][:12] == first  # remembered
    t[0] = 9  # in place: the version counter moves, so the hash is computed again
    assert artifacts.hash_tensor(t) == artifacts.hash_tensor(t.clone()) != first
    with torch.inference_mode():
        inf = torch.arange(6, dtype=torch.uint8)  # no version counter: hashed every time, never remembered
    assert artifacts.hash_tensor(inf) == first
    assert not hasattr(inf, "_study_sha256")


# ----------------------------------------------------------------------------- runs
def _finish(run, acc=0.5):
    run.finish({"test_acc": acc, "seed": 1}, predictions={"pred": np.zeros(4, np.uint8)})


def test_run_lifecycle(artifact_root):
    run = runs.Run("scratch", "m", {"a": 1}, "quick")
    assert run.folder.parent == artifact_root / "quick" / "scratch" and not run.done
    calls = []
    run.ensure(lambda r: (calls.append(1), _finish(r)))
    run.ensure(lambda r: calls.append(2))  # finished: reused
    assert calls == [1] and run.metrics["test_acc"] == 0.5 and run.metrics["key"] == {"a": 1}
    run.ensure(lambda r: (calls.append(3), _finish(r, 0.7)), force=True)
    assert calls == [1, 3] and runs.Run("scratch", "m", {"a": 1}, "quick").metrics["test_acc"] == 0.7
    with pytest.raises(RuntimeError, match="without writing metrics.json"):
        runs.Run("scratch", "m", {"a": 2}, "quick").ensure(lambda r: None)


def test_table_filters_on_dotted_keys(artifact_root):
    for seed, recipe in [(1, "study"), (2, "study"), (1, "reference_code")]:
        _finish(runs.Run("scratch", "m", {"recipe": {"name": recipe, "seed": seed}}, "quick"))
    t = runs.table("quick", "scratch", "m", **{"recipe.name": "study"})
    assert sorted(t["recipe.seed"]) == [1, 2] and set(t.source) == {"store"}
    assert len(runs.table("quick", "scratch", "m", **{"recipe.name": "study", "subset.per_class": None})) == 2
    assert runs.table("quick", "scratch", "other").empty


def test_ensure_trains_or_prints_the_command(artifact_root, monkeypatch, capsys):
    run = runs.Run("scratch", "m", {"a": 9}, "quick")
    set_run_mode(monkeypatch, train=False)
    assert not runs.ensure(run, _finish, "python -m train-it").done
    assert "python -m train-it" in capsys.readouterr().out
    assert runs.ensure(run, _finish, "python -m train-it", train=True).done  # a command that exists to train it
    run.reset()
    set_run_mode(monkeypatch, train=True)
    assert runs.ensure(run, _finish, "python -m train-it").done


def test_shipped_runs_are_found_verified_and_never_overwritten(artifact_root, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SHIPPED_RUNS_DIR", tmp_path / "runs")
    run = runs.Run("head", "m", {"k": 1}, "full")
    _finish(run)
    artifacts.torch_save(run.folder / "model.pt", {"w": torch.ones(2)})
    artifacts.torch_save(run.folder / "checkpoint.pt", {"big": 1})
    written = ship.ship(run, weights=True)
    assert sorted(p.name for p in written) == ["metrics.json", "model.pt", "predictions.npz"]
    assert ship.verify_manifest() == 3
    run.reset()  # gone from the store: now found in runs/
    again = runs.Run("head", "m", {"k": 1}, "full")
    assert again.done and again.shipped and again.load()["w"].sum() == 2
    with pytest.raises(RuntimeError, match="cannot recompute a shipped run"):
        again.ensure(_finish, force=True)
    with runs.mode(use_shipped=False):  # --retrain: shipped runs are ignored
        assert not runs.Run("head", "m", {"k": 1}, "full").done
    assert runs.Run("head", "m", {"k": 1}, "full").done
    (again.shipped_folder / "metrics.json").write_text('{"test_acc": 0.99}')
    with pytest.raises(ship.ShippedRunError, match="metrics.json has sha256 .* altered"):
        ship.verify_manifest()


def test_measured_caches_per_key(artifact_root):
    n = []
    compute = lambda: (n.append(1), {"ms": 1.5, "n": len(n)})[1]  # noqa: E731
    assert runs.measured("quick", "timings", "m", {"cpu": "x"}, compute) == {"ms": 1.5, "n": 1}
    assert runs.measured("quick", "timings", "m", {"cpu": "x"}, compute)["n"] == 1
    assert runs.measured("quick", "timings", "m", {"cpu": "y"}, compute)["n"] == 2
    assert runs.measured("quick", "timings", "m", {"cpu": "x"}, compute, force=True)["n"] == 3


def test_a_shipped_measurement_is_read_and_remeasure_times_again(artifact_root, tmp_path, monkeypatch):
    """Shipped latencies (ship.SHIPPED_KINDS) are read on a machine with the same key; ``force`` (notebook 05's
    remeasure) measures into the store, which is read first from then on."""
    monkeypatch.setattr(config, "SHIPPED_RUNS_DIR", tmp_path / "runs")
    n = []
    compute = lambda: (n.append(1), {"n": len(n)})[1]  # noqa: E731
    assert "timings" in ship.SHIPPED_KINDS and "int8_latency" in ship.SHIPPED_KINDS
    assert runs.measured("full", "timings", "m", {"cpu": "x"}, compute)["n"] == 1
    run = runs.Run("timings", "m", {"cpu": "x"}, "full", marker="result.json")
    ship.ship(run)
    run.reset()
    assert runs.measured("full", "timings", "m", {"cpu": "x"}, compute)["n"] == 1 and len(n) == 1  # read, not timed
    assert runs.measured("full", "timings", "m", {"cpu": "x"}, compute, force=True)["n"] == 2
    assert runs.measured("full", "timings", "m", {"cpu": "x"}, compute)["n"] == 2
    assert runs.measured("full", "timings", "m", {"cpu": "other machine"}, compute)["n"] == 3


# ----------------------------------------------------------------------------- structure
def _imports(path: Path, package: str) -> set[str]:
    """studylib modules imported by ``path`` (absolute or relative, at any level of the file)."""
    mod = ".".join(path.relative_to(config.PROJ_ROOT).with_suffix("").parts)
    if mod.endswith(".__init__"):
        mod = mod[: -len(".__init__")]
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = pkg.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base.startswith(package):
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith(package))
    return out


def test_studylib_import_graph_has_no_cycle():
    files = {".".join(p.relative_to(config.PROJ_ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (config.PROJ_ROOT / "studylib").rglob("*.py")}
    graph = {m: {i for i in _imports(p, "studylib") if i in files and i != m} for m, p in files.items()}
    # a package's __init__ importing its own submodules at the end is how they register; not a cycle
    for m in graph:
        graph[m] = {i for i in graph[m] if not (files[i].name == "__init__.py" and m.startswith(i + "."))}
    state, cycle = {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in graph[m]:
            if state.get(n) == "open":
                cycle.append(stack + [m, n])
            elif n not in state:
                visit(n, stack + [m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])
    assert cycle == []


def test_every_model_is_registered_in_a_fresh_process():
    code = "from studylib.models import build_model; m = build_model('strong_cnn'); print(type(m).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "StrongCNN"


def test_the_run_lifecycle_is_written_once():
    hits = [p.name for p in (config.PROJ_ROOT / "studylib").rglob("*.py") if "rmtree" in p.read_text()]
    assert hits == ["runs.py"]


def test_every_shipped_file_is_committable():
    """A fresh clone has exactly what git tracks: a manifest entry that .gitignore hides (model.pt once
    was, by ``*.pt``) would make every fresh clone refuse the shipped runs."""
    files = [f"runs/{rel}" for rel in ship.read_manifest()]
    if not files:
        pytest.skip("no shipped runs")
    root = config.PROJ_ROOT
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "check-ignore", "--no-index", *files], cwd=root, capture_output=True, text=True)
    assert out.stdout.split() == [], f"git ignores shipped files; add an exception to .gitignore: {out.stdout}"


def test_shipped_runs_fit_their_budget():
    """runs/ (git-tracked, in every clone) stays within ship.SHIPPED_BUDGET; the manifest lists every file in it
    but itself, the README and the deployed rows' index."""
    from studylib.serve import deploy

    if not ship.read_manifest():
        pytest.skip("no shipped runs")
    listed = sum(rec["bytes"] for rec in ship.read_manifest().values())
    total = ship.shipped_bytes()
    unlisted = [n for n in (ship.MANIFEST, "README.md", deploy.INDEX_FILE) if (runs.shipped_root() / n).exists()]
    assert total == listed + sum((runs.shipped_root() / n).stat().st_size for n in unlisted)
    assert total <= ship.SHIPPED_BUDGET, f"runs/ holds {total / 1e6:.1f} MB, over {ship.SHIPPED_BUDGET / 1e6:.0f} MB"


def _rooted(text: str) -> bool:
    """An absolute path of a machine: "/" and a folder that exists at this machine's root or usually does
    elsewhere (not an ONNX node scope such as "/features/features.0/", which INT8 keys hold)."""
    top = text.split("/")[1] if text.startswith("/") and len(text) > 1 else ""
    return bool(top) and (top in ("home", "Users", "tmp", "work", "root", "mnt", "opt", "usr", "var", "scratch")
                          or Path("/", top).is_dir())


def test_shipped_files_name_no_machine_path():
    """Shipped metrics travel to every clone: paths in them (feature caches, weight files) are written as
    config.display_path writes them, never as the training machine's absolute path."""
    files = list(config.SHIPPED_RUNS_DIR.rglob("*.json"))
    if not files:
        pytest.skip("no shipped runs")
    leaks = []

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")
        elif isinstance(node, str) and (node.startswith("~") or ":\\" in node or _rooted(node)):
            leaks.append(f"{where} = {node}")

    for p in files:
        walk(json.loads(p.read_text()), p.relative_to(config.PROJ_ROOT).as_posix())
    assert not leaks, f"{len(leaks)} absolute paths in shipped files, e.g. {leaks[:3]}"


def test_a_command_sets_its_mode_from_its_flags(monkeypatch):
    set_run_mode(monkeypatch)  # restored after the test
    args = runs.parse_command(runs.command_parser("a recipe", []), ["--retrain", "--no-wait", "--profile", "quick"])
    assert (args.profile, args.device) == ("quick", "auto")
    assert runs.current_mode() == runs.Mode(use_shipped=False, train=True, wait=False)
    runs.parse_command(runs.command_parser("a recipe", []), [])
    assert runs.current_mode() == runs.Mode()
