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
