import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from studylib import config, data

SHARED_DATA = config.PROJ_ROOT.parent / "shared" / "data" / data.FOLDER_NAME


def find_real_data() -> Path | None:
    for candidate in (os.environ.get(config.DATA_DIR_ENV), config.DEFAULT_DATA_DIR / data.FOLDER_NAME, SHARED_DATA):
        if candidate and (data._as_batches_dir(Path(candidate)) / data.META_FILE).exists():
            return data._as_batches_dir(Path(candidate))
    return None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    found = find_real_data()
    if found is None:
        pytest.skip(f"real CIFAR-10 not found; set ${config.DATA_DIR_ENV} to a cifar-10-batches-py folder")
    return found


def write_batch(path: Path, n_per_class: int, seed: int, n_classes: int = 10) -> None:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    rng.shuffle(labels)
    img = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    with open(path, "wb") as f:
        pickle.dump({"data": img, "labels": labels.tolist(), "batch_label": path.name}, f)


def make_fake_cifar(root: Path, n_per_class: int = 4) -> Path:
    """A tiny folder in the cifar-10-batches-py layout (random pixels, balanced labels)."""
    folder = root / data.FOLDER_NAME
    folder.mkdir(parents=True)
    with open(folder / data.META_FILE, "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    for i, name in enumerate(data.TRAIN_FILES + data.TEST_FILES):
        write_batch(folder / name, n_per_class, seed=i)
    return folder


@pytest.fixture
def fake_cifar(tmp_path) -> Path:
    return make_fake_cifar(tmp_path)


@pytest.fixture
def artifact_root(tmp_path, monkeypatch) -> Path:
    """An empty artifact store for the test."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv(config.ARTIFACTS_DIR_ENV, str(root))
    return root


# ---------------------------------------------------------------------------------------
# Finished quick-profile runs of every deployable row, written WITHOUT training
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def quick_store(real_data_dir, tmp_path_factory) -> Path:
    """An artifact store holding a finished quick-profile run for every study row that can run: the
    runs' keys are the real ones, their weights are seeded random initialisations (nothing is trained:
    the demo, the CLI and deploy only need models that load and predict). Backbones without genuine
    weights are left out, as notebook 03 leaves them out."""
    import torch

    from studylib.recipes import experiments
    from studylib.serve import deploy
    from studylib import models, runs, weights

    root = tmp_path_factory.mktemp("quick-artifacts")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(config.ARTIFACTS_DIR_ENV, str(root))
        mp.setenv(weights.OFFLINE_ENV, "1")
        mp.setattr(runs, "_mode", runs.Mode(use_shipped=False))
        for row in deploy.ROWS:
            if row.best:
                continue  # below: their runs are found by what their keys record, not by one job
            try:
                job = experiments.row_job(row, "quick", data_dir=real_data_dir)
            except weights.WeightsUnavailable:
                continue
            torch.manual_seed(0)
            metrics = {"model": row.model, "recipe": row.recipe, "seed": 42, "test_acc": 0.1, "test_n": 500,
                       "epochs": 0, "steps": 0, "train_seconds": 0.0, "device": "cpu", "precision": "fp32"}
            if row.scratch:
                net = models.build_model(row.model, **config.recipe(row.recipe)[row.model])
                state = net.state_dict()
            else:
                model = models.build_model(row.model)
                state = model.head.state_dict()
                metrics.update(size=model.preprocess.size, weights=model.provenance)
            job.run.finish(metrics, files={runs.WEIGHTS_FILE: state},
                           predictions={"pred": np.zeros(500, np.uint8), "y": np.zeros(500, np.uint8)})
        finish_best_rows("quick", real_data_dir)
    return root


def finish_best_rows(profile: str, data_dir) -> None:
    """Finished runs (untrained weights) of the best-network rows: the strong recipe's first seed and the
    controlled grid's ImageNet-init end-to-end run (left out without the backbone's ImageNet weights)."""
    import torch

    from studylib.serve import deploy
    from studylib import models, runs, weights
    from studylib.models import backbones
    from studylib.recipes import finetune, strong

    base = {"test_acc": 0.1, "test_n": 500, "epochs": 0, "steps": 0, "train_seconds": 0.0, "device": "cpu",
            "precision": "fp32"}
    preds = {"pred": np.zeros(500, np.uint8), "y": np.zeros(500, np.uint8)}
    torch.manual_seed(0)
    seed = deploy.best_seed(deploy.ROW["strong_cnn"], profile)
    strong.job(profile, seed=seed, data_dir=data_dir).run.finish(
        {**base, "model": "strong_cnn", "recipe": "strong", "seed": seed, "tta_level": 2, "test_acc_tta": 0.1},
        files={runs.WEIGHTS_FILE: models.build_model("strong_cnn").state_dict()}, predictions=preds)
    g, seed = config.grid("controlled", profile), deploy.best_seed(deploy.ROW["mobilenet_v2_finetuned"], profile)
    try:
        job = finetune.job("imagenet", profile, seed=seed, data_dir=data_dir)
    except weights.WeightsUnavailable:
        return
    net = backbones.build_transfer(g["backbone"], init="imagenet", size=g["size"], frozen=False)
    job.run.finish({**base, "model": g["backbone"], "recipe": "finetune", "init": "imagenet", "seed": seed,
                    "size": g["size"], "weights": net.provenance},
                   files={runs.WEIGHTS_FILE: net.state_dict()}, predictions=preds)


@pytest.fixture
def quick_models(quick_store, real_data_dir, monkeypatch) -> Path:
    """The session's quick-profile store as this test's $STUDY_ARTIFACTS (CIFAR-10 and downloads
    set up as for the notebooks: $CIFAR10_DIR, no weight downloads, shipped runs ignored)."""
    from studylib import runs, weights

    monkeypatch.setenv(config.ARTIFACTS_DIR_ENV, str(quick_store))
    monkeypatch.setenv(config.DATA_DIR_ENV, str(real_data_dir))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    set_run_mode(monkeypatch, use_shipped=False)
    return quick_store


def set_run_mode(monkeypatch, **changes) -> None:
    """This test's run mode (studylib.runs.Mode fields), restored after it."""
    from dataclasses import replace

    from studylib import runs

    monkeypatch.setattr(runs, "_mode", replace(runs.current_mode(), **changes))
