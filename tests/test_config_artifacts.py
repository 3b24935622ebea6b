import os

import pytest
import torch

from studylib import artifacts, config


def test_profiles_apply_over_protocol():
    full = config.get_profile("full")
    assert full["epochs"] == 15 and full["batch_size"] == 128 and full["optimizer"]["lr"] == 1e-3
    assert full["train_per_class"] is None
    quick = config.get_profile("quick", seed=0)
    assert quick["seed"] == 0 and quick["epochs"] < full["epochs"] and quick["profile"] == "quick"


def test_profile_errors():
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        config.get_profile("fast")
    with pytest.raises(KeyError, match="unknown protocol key 'epoch'"):
        config.get_profile("full", epoch=3)
    with pytest.raises(TypeError, match="'epochs' expects int, got str"):
        config.get_profile("full", epochs="3")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    artifacts.write_bytes(target, b"old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        artifacts.atomic_write(target, boom)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]


def test_json_and_torch_roundtrip(tmp_path):
    artifacts.write_json(tmp_path / "m.json", {"acc": torch.tensor(0.5).item(), "p": tmp_path})
    assert artifacts.read_json(tmp_path / "m.json")["acc"] == 0.5
    artifacts.torch_save(tmp_path / "t.pt", {"w": torch.ones(2)})
    assert torch.load(tmp_path / "t.pt")["w"].sum() == 2


def test_hashes_are_stable_and_sensitive():
    assert artifacts.hash_obj({"a": 1, "b": 2}) == artifacts.hash_obj({"b": 2, "a": 1})
    assert artifacts.hash_obj({"a": 1}) != artifacts.hash_obj({"a": 2})
    t = torch.arange(6, dtype=torch.uint8)
    assert artifacts.hash_tensor(t) == artifacts.hash_tensor(t.clone())
    assert artifacts.hash_tensor(t) != artifacts.hash_tensor(t.reshape(2, 3))


def test_artifact_dirs_separate_profiles(artifact_root):
    a = artifacts.artifact_dir("quick", "train", "custom_cnn", {"x": 1})
    b = artifacts.artifact_dir("full", "train", "custom_cnn", {"x": 1})
    assert a != b and a.is_relative_to(artifact_root)
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        artifacts.latest("quick", "train", "custom_cnn")


def test_cached_json_computes_once_per_key(artifact_root):
    calls = []

    def compute():
        calls.append(1)
        return {"median_ms": 1.5, "n": len(calls)}

    key = {"cpu": "x", "threads": 2}
    assert artifacts.cached_json("quick", "timings", "m", key, compute) == {"median_ms": 1.5, "n": 1}
    assert artifacts.cached_json("quick", "timings", "m", key, compute) == {"median_ms": 1.5, "n": 1}
    assert len(calls) == 1
    assert artifacts.cached_json("quick", "timings", "m", {**key, "threads": 1}, compute)["n"] == 2  # other machine/settings
    assert artifacts.cached_json("quick", "timings", "m", key, compute, force=True)["n"] == 3
