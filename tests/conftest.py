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
# Every study model trained under the quick profile, once per test session
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def quick_store(real_data_dir, tmp_path_factory) -> Path:
    """An artifact store in which every study model that can run has a finished quick-profile
    run (scratch models trained, transfer heads on cached features; backbones without genuine
    weights are left out, as notebook 03 leaves them out). Built once per session (2-5 min on
    2 shared CPU cores); use it through the ``quick_models`` fixture.

    ``$STUDY_TEST_QUICK_STORE`` names a folder to build it in instead of a fresh temporary one:
    the training calls below still run and reuse only finished runs whose key (config, data,
    code version) matches, so a store kept between local runs saves the minutes without
    trusting stale artifacts."""
    from studylib import deploy, train, transfer, weights

    kept = os.environ.get("STUDY_TEST_QUICK_STORE")
    root = Path(kept) if kept else tmp_path_factory.mktemp("quick-artifacts")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(config.ARTIFACTS_DIR_ENV, str(root))
        mp.setenv(weights.OFFLINE_ENV, "1")  # tests never download
        for name in deploy.SCRATCH:
            train.train_from_scratch(name, "quick", data_dir=real_data_dir, progress=False)
        for name in transfer.TRANSFER_MODELS:
            try:
                transfer.train_transfer(name, "quick", data_dir=real_data_dir, progress=False)
            except weights.WeightsUnavailable:
                continue
    return root


@pytest.fixture
def quick_models(quick_store, real_data_dir, monkeypatch) -> Path:
    """The session's quick-profile store as this test's $STUDY_ARTIFACTS (CIFAR-10 and downloads
    set up as for the notebooks: $CIFAR10_DIR, no weight downloads)."""
    from studylib import weights

    monkeypatch.setenv(config.ARTIFACTS_DIR_ENV, str(quick_store))
    monkeypatch.setenv(config.DATA_DIR_ENV, str(real_data_dir))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    return quick_store
