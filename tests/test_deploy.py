"""studylib.serve.deploy: self-describing deployed runs (runs/DEPLOYED.json + each run's deployable.json), loaded
without CIFAR-10 and without the training code (studylib.recipes)."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from image_inputs import good_inputs
from studylib import artifacts, config, runs, ship, weights
from studylib.serve import deploy

INDEX = deploy.read_index("full")
# Rows whose model loads from runs/ alone; the transfer heads also need their ImageNet backbone file.
NEEDS_NO_IMAGENET_FILE = ("custom_cnn", "custom_cnn_refcode", "vit_small", "vit_small_refcode", "strong_cnn",
                          "mobilenet_v2_finetuned")


def run_python(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter from the project root (a fresh sys.modules)."""
    import os

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=config.PROJ_ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})


def test_importing_deploy_predict_and_demo_loads_no_training_code(tmp_path):
    out = run_python("""
        import sys
        import studylib.serve.deploy, studylib.serve.predict, studylib.serve.demo
        print([m for m in sys.modules if m.startswith("studylib.recipes")])
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"training code imported by the serving modules: {out.stdout}"


def test_predict_every_row_as_json_without_the_dataset_or_the_training_code(tmp_path):
    """The issue's "done when": predict --model all --format json with no CIFAR-10, rows include the best networks;
    loading every row imports nothing under studylib.recipes."""
    if not {"strong_cnn", "mobilenet_v2_finetuned"} <= set(INDEX):
        pytest.skip("runs/DEPLOYED.json does not list the best networks (python -m studylib.serve.deploy index)")
    (tmp_path / "photo.png").write_bytes(good_inputs()["rgb.png"])
    out = run_python(f"""
        import json, sys
        from studylib import data
        from studylib.serve import predict

        def missing(*args, **kw):
            raise data.DataError("no dataset on this machine (test)")

        for name in ("resolve_data_dir", "load_cifar10", "load_profile_data", "read_classes"):
            setattr(data, name, missing)
        code = predict.main([{str(tmp_path / "photo.png")!r}, "--model", "all", "--format", "json",
                             "--output", {str(tmp_path / "out.json")!r}])
        print(json.dumps({{"code": code, "recipes": [m for m in sys.modules if m.startswith("studylib.recipes")]}}))
    """, tmp_path, STUDY_WEIGHTS_OFFLINE="1")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "recipes": []}, out.stderr
    doc = json.loads((tmp_path / "out.json").read_text())
    models = {m["model"]: m for m in doc["models"]}
    assert list(models) == list(deploy.ROW)
    for key in NEEDS_NO_IMAGENET_FILE:
        if key in INDEX:
            assert models[key]["status"] == deploy.OK and models[key]["run"] == INDEX[key]["id"], models[key]
    (item,) = doc["inputs"]
    ran = [p for p in item["predictions"] if p["status"] == deploy.OK]
    assert {"strong_cnn", "mobilenet_v2_finetuned"} <= {p["model"] for p in ran}
    for p in ran:
        probs = [t["probability"] for t in p["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and p["prediction"] == p["top"][0]["class"]
    assert doc["latency"] is None  # no --time, no latency


@pytest.mark.parametrize("key", sorted(INDEX))
def test_shipped_description_is_the_runs_own_and_in_the_manifest(key):
    run = deploy.indexed_run(key, "full")
    # the shipped copy (a run that trained on this machine is also in the store, which is read first)
    assert run is not None and run.has_shipped_copy, f"{key}: {INDEX[key]} is not shipped"
    path = run.shipped_folder / deploy.DESCRIPTION_FILE
    assert path.is_file(), f"{key}: no {deploy.DESCRIPTION_FILE}; write it with python -m studylib.serve.deploy index"
    assert artifacts.read_json(path) == deploy.describe(run)
    rel = path.relative_to(runs.shipped_root()).as_posix()
    assert ship.read_manifest()[rel]["sha256"] == artifacts.hash_file(path)
    desc = artifacts.read_json(path)
    assert desc["classes"] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert desc["builder"]["name"] in __import__("studylib.models", fromlist=["MODELS"]).MODELS


def _training_code_model(run):
    """The same run's model as the training code builds it (recipes' loaders)."""
    from studylib.recipes import finetune, heads, scratch, strong

    return {"scratch": scratch.load, "strong": strong.load, "finetune": finetune.load,
            "head": lambda r: heads.load(r)}[run.kind](run)


@pytest.mark.parametrize("key", sorted(INDEX))
def test_description_builds_the_model_the_training_code_builds(key, monkeypatch):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    d = deploy.load(key, "full", indexed=True)
    if d.status == deploy.NO_WEIGHTS:
        pytest.skip(f"{key}: no ImageNet backbone file here")
    assert d.ok and d.run.id == INDEX[key]["id"] and d.description == artifacts.read_json(
        d.run.shipped_folder / deploy.DESCRIPTION_FILE)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours, theirs = d.model(images), _training_code_model(d.run)(images)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_strong_row_offers_its_recipes_tta():
    if "strong_cnn" not in INDEX:
        pytest.skip("runs/DEPLOYED.json does not list the strong recipe")
    from studylib.recipes import strong

    d = deploy.load("strong_cnn", "full", indexed=True)
    assert d.tta_level == d.run.metrics["tta_level"] == 2
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        deployed_tta = d.tta_model()(images)
    recipe_tta = strong.tta_logits(d.model, images, device=torch.device("cpu"), level=2, precision="fp32")
    assert torch.allclose(deployed_tta, recipe_tta, atol=1e-5)
    with pytest.raises(ValueError, match="no test-time augmentation"):
        deploy.load("custom_cnn", "full", indexed=True).tta_model()


def test_build_refuses_a_description_it_cannot_honour(monkeypatch):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    run = deploy.indexed_run("custom_cnn", "full")
    if run is None:
        pytest.skip("runs/DEPLOYED.json does not list the Custom CNN")
    desc = deploy.description(run)
    with pytest.raises(deploy.DescriptionError, match="format"):
        deploy.build({**desc, "format": 99}, run.load())
    head = deploy.indexed_run("mobilenet_v2_float", "full")
    if head is not None:
        wrong = deploy.description(head)
        wrong["backbone_weights"] = {**wrong["backbone_weights"], "sha256": "0" * 64}
        try:
            with pytest.raises(deploy.DescriptionError, match="retrain the head"):
                deploy.build(wrong, head.load())
        except weights.WeightsUnavailable:
            pytest.skip("no float MobileNetV2 ImageNet file here")


def test_best_rows_are_found_without_their_training_job():
    for key in ("strong_cnn", "mobilenet_v2_finetuned"):
        row = deploy.ROW[key]
        assert row.best and row.strategy and row.architecture_counts()["total"] > 0
        with pytest.raises(ValueError, match="select"):
            deploy.reference_run(row, "full")
        if key in INDEX:
            assert deploy.select_run(row, "full").id == INDEX[key]["id"]
    run = deploy.select_run(deploy.ROW["mobilenet_v2_finetuned"], "full")
    if run is not None:
        m = run.metrics
        assert m["init"] == "imagenet" and m["seed"] == 0 and run.key["subset"]["per_class"] is None
        assert run.key["recipe"]["epochs"] == config.recipe("finetune")["epochs"]


def test_reference_rows_are_found_by_their_keys_contents_as_their_jobs_key_them(quick_models, real_data_dir):
    """deploy.find_run (no dataset, no training code) finds the very run each reference row's training job keys, and
    the command a missing row names is that job's."""
    from studylib.recipes import experiments, scratch

    assert deploy.SCRATCH_MODELS == scratch.MODELS
    checked = 0
    for row in deploy.ROWS:
        if row.best:
            continue
        try:
            job = experiments.row_job(row, "quick", data_dir=real_data_dir)
        except weights.WeightsUnavailable:
            continue
        assert job.command.startswith(row.command("quick"))  # the job's adds the device it was asked for
        if job.run.done:  # quick_store finished it
            assert deploy.find_run(row, "quick").id == job.run.id
            checked += 1
    assert checked >= 4  # the four scratch rows at least


def test_reference_run_needs_todays_recipe_and_engine(artifact_root, monkeypatch):
    """A finished run whose key records another recipe setting or engine version than today's is not the row's."""
    from conftest import set_run_mode

    set_run_mode(monkeypatch, use_shipped=False)
    row = deploy.ROW["custom_cnn"]
    recipe = {k: v for k, v in config.recipe("study", "quick").items() if k not in ("label", "vit_small")}

    def finished(**changes) -> runs.Run:
        key = {"model": "custom_cnn", "engine": runs.ENGINE_VERSION, "data": {"train": "t", "test": "e"},
               "recipe": recipe, **changes}
        run = runs.Run("scratch", "custom_cnn", key, "quick")
        run.finish({"model": "custom_cnn", "test_acc": 0.1}, files={runs.WEIGHTS_FILE: {}})
        return run

    assert deploy.reference_run(row, "quick") is None
    finished(recipe={**recipe, "epochs": recipe["epochs"] + 1})
    finished(engine=runs.ENGINE_VERSION - 1)
    finished(subset={"per_class": 100, "subset_seed": 42, "repeats": 1})
    assert deploy.reference_run(row, "quick") is None
    today = finished()
    assert deploy.reference_run(row, "quick").id == today.id
    assert deploy.reference_run(deploy.ROW["custom_cnn_refcode"], "quick") is None
