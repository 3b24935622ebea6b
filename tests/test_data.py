import pickle

import numpy as np
import pytest
import torch

from studylib import config, data
from studylib.data import DataError

from conftest import write_batch


# ----------------------------------------------------------------------------- real data
def test_real_train_facts(real_data_dir):
    train = data.load_cifar10("train", real_data_dir)
    assert train.images.shape == (50000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert train.classes == ("airplane", "automobile", "bird", "cat", "deer",
                             "dog", "frog", "horse", "ship", "truck")
    mean, std = data.channel_stats(train.images)
    assert np.allclose(mean, [0.4914, 0.4822, 0.4465], atol=5e-5)
    assert np.allclose(std, [0.2470, 0.2435, 0.2616], atol=5e-5)


def test_real_test_facts(real_data_dir):
    test = data.load_cifar10("test", real_data_dir)
    assert test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def test_real_first_batch_counts(real_data_dir):
    images, labels = data._read_batch(real_data_dir / "data_batch_1")
    assert np.bincount(labels).tolist() == [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]


# ----------------------------------------------------------------------------- synthetic folder
def test_loads_synthetic_folder_and_parent(fake_cifar):
    for path in (fake_cifar, fake_cifar.parent):  # the folder itself or the folder holding it
        train = data.load_cifar10("train", path, check_counts=False)
        assert train.images.shape == (5 * 40, 3, 32, 32)
        assert train.classes[0] == "class0"
    # the first image's red plane is the first 1024 bytes of the pickled row
    raw = pickle.load(open(fake_cifar / "data_batch_1", "rb"))
    assert torch.equal(train.images[0, 0].flatten(), torch.from_numpy(raw["data"][0, :1024]))


def test_full_split_counts_are_enforced(fake_cifar):
    with pytest.raises(DataError, match=r"per-class counts \[20, 20.*expected 5000"):
        data.load_cifar10("train", fake_cifar)


def test_byte_keys_accepted(fake_cifar):
    raw = pickle.load(open(fake_cifar / "test_batch", "rb"))
    with open(fake_cifar / "test_batch", "wb") as f:
        pickle.dump({k.encode(): v for k, v in raw.items()}, f)
    assert len(data.load_cifar10("test", fake_cifar, check_counts=False)) == 40


def test_resolution_order(tmp_path, monkeypatch, fake_cifar):
    monkeypatch.setenv(config.DATA_DIR_ENV, str(tmp_path / "from_env"))
    assert data.resolve_data_dir(fake_cifar) == (fake_cifar, "argument")
    assert data.resolve_data_dir(None) == (tmp_path / "from_env" / data.FOLDER_NAME, "$CIFAR10_DIR")
    monkeypatch.delenv(config.DATA_DIR_ENV)
    assert data.resolve_data_dir(None) == (config.DEFAULT_DATA_DIR / data.FOLDER_NAME, "project default")


# ----------------------------------------------------------------------------- error paths
def test_missing_folder_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.delenv(config.DATA_DIR_ENV, raising=False)
    with pytest.raises(DataError) as err:
        data.load_cifar10("train", tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "CIFAR10_DIR" in msg and "--download" in msg


def test_download_uses_torchvision(tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, download))
            from conftest import make_fake_cifar
            make_fake_cifar(tmp_path / "dl")

    monkeypatch.setattr("torchvision.datasets.CIFAR10", FakeCIFAR10)
    train = data.load_cifar10("train", tmp_path / "dl", download=True, check_counts=False)
    assert calls == [(str(tmp_path / "dl"), True)] and len(train) == 200


def test_missing_batch_file(fake_cifar):
    (fake_cifar / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing file .*data_batch_3"):
        data.load_cifar10("train", fake_cifar, check_counts=False)


def test_corrupted_pickle(fake_cifar):
    (fake_cifar / "data_batch_2").write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError, match="data_batch_2.*corrupted or truncated"):
        data.load_cifar10("train", fake_cifar, check_counts=False)


def test_truncated_pickle(fake_cifar):
    path = fake_cifar / "test_batch"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="test_batch.*corrupted or truncated"):
        data.load_cifar10("test", fake_cifar, check_counts=False)


def test_wrong_shape(fake_cifar):
    with open(fake_cifar / "data_batch_4", "wb") as f:
        pickle.dump({"data": np.zeros((40, 3000), np.uint8), "labels": [0] * 40}, f)
    with pytest.raises(DataError, match=r"data_batch_4.*shape \(40, 3000\)"):
        data.load_cifar10("train", fake_cifar, check_counts=False)


def test_wrong_dtype(fake_cifar):
    with open(fake_cifar / "data_batch_4", "wb") as f:
        pickle.dump({"data": np.zeros((40, 3072), np.float32), "labels": [0] * 40}, f)
    with pytest.raises(DataError, match="uint8"):
        data.load_cifar10("train", fake_cifar, check_counts=False)


def test_wrong_label_range(fake_cifar):
    write_batch(fake_cifar / "data_batch_5", 4, seed=0, n_classes=11)
    with pytest.raises(DataError, match=r"data_batch_5.*labels outside 0..9"):
        data.load_cifar10("train", fake_cifar, check_counts=False)


def test_label_count_mismatch(fake_cifar):
    with open(fake_cifar / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((40, 3072), np.uint8), "labels": [0] * 39}, f)
    with pytest.raises(DataError, match="39 labels for 40 images"):
        data.load_cifar10("test", fake_cifar, check_counts=False)


def test_bad_meta(fake_cifar):
    with open(fake_cifar / data.META_FILE, "wb") as f:
        pickle.dump({"label_names": ["a", "b"]}, f)
    with pytest.raises(DataError, match="label_names"):
        data.load_cifar10("test", fake_cifar, check_counts=False)


# ----------------------------------------------------------------------------- splits
def test_stratified_subset_deterministic_balanced_nested():
    labels = np.repeat(np.arange(10), 50)
    np.random.default_rng(0).shuffle(labels)
    a = data.stratified_subset(labels, 7, seed=1)
    assert np.array_equal(a, data.stratified_subset(labels, 7, seed=1))
    assert np.bincount(labels[a]).tolist() == [7] * 10
    assert not np.array_equal(a, data.stratified_subset(labels, 7, seed=2))
    assert set(data.stratified_subset(labels, 3, seed=1)) <= set(a)  # nested sizes
    with pytest.raises(ValueError, match="cannot take 51"):
        data.stratified_subset(labels, 51, seed=1)


def test_train_val_split():
    labels = np.repeat(np.arange(10), 100)
    tr, va = data.train_val_split(labels, 0.1, seed=3)
    assert len(va) == 100 and np.bincount(labels[va]).tolist() == [10] * 10
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 1000
    assert np.array_equal(va, data.train_val_split(labels, 0.1, seed=3)[1])
    with pytest.raises(ValueError):
        data.train_val_split(labels, 1.5, seed=3)


def test_channel_stats_toy():
    images = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    images[:, 0] = 255          # red all ones
    images[0, 1] = 255          # green half ones
    mean, std = data.channel_stats(images, chunk=1)
    assert np.allclose(mean, [1.0, 0.5, 0.0]) and np.allclose(std, [0.0, 0.5, 0.0])


def test_profile_data_quick(real_data_dir):
    cfg = config.get_profile("quick")
    train, test = data.load_profile_data(cfg, real_data_dir)
    assert len(train) == 10 * cfg["train_per_class"] and len(test) == 10 * cfg["test_per_class"]
    assert torch.bincount(test.labels).tolist() == [cfg["test_per_class"]] * 10
