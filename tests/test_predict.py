"""studylib.serve.predict: any image file -> the 32x32 model input (bad input refused clearly), predictions, the CLI."""

import json
import re
import time

import numpy as np
import pytest
from conftest import set_run_mode
import torch
from PIL import Image
from torch import nn

from image_inputs import bad_inputs, encode, good_inputs, gradient
from studylib.serve import deploy, predict

GOOD, BAD = good_inputs(), bad_inputs()


# ---------------------------------------------------------------------------------------
# load_image: conversions
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_supported_input_becomes_a_32x32_rgb_image(name):
    image, note = predict.load_image(GOOD[name])
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 32, 32)
    assert note.startswith(("64x48", "40x40", "3x2", "3000x2000")) and "32x32" in note


def test_lossless_formats_give_identical_pixels_and_jpeg_nearly():
    ref, _ = predict.load_image(GOOD["rgb.png"])
    for name in ("rgb.bmp", "rgb.webp"):
        assert torch.equal(predict.load_image(GOOD[name])[0], ref), name
    jpg, _ = predict.load_image(GOOD["rgb.jpg"])
    assert (jpg.float() - ref.float()).abs().mean() < 3


def test_downsampling_averages_areas():
    """A 1-pixel checkerboard of 0/255 averages to mid-gray (nearest-neighbour would keep 0s and 255s)."""
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    image, _ = predict.load_image(encode(Image.fromarray(np.stack([board] * 3, -1)), "PNG"))
    assert image.min() >= 127 and image.max() <= 128


def test_non_square_image_is_centre_cropped():
    arr = np.zeros((32, 96, 3), np.uint8)
    arr[:, :32, 0], arr[:, 32:64, 1], arr[:, 64:, 2] = 255, 255, 255  # red | green | blue thirds
    image, note = predict.load_image(encode(Image.fromarray(arr), "PNG"))
    assert "centre 32x32 square cropped" in note
    assert (image[1] == 255).all() and (image[0] == 0).all() and (image[2] == 0).all()


def test_conversions_keep_the_picture():
    gray = predict.load_image(GOOD["grayscale.png"])[0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert (predict.load_image(GOOD["gray16.png"])[0] == 128).all()  # 32896 / 257 = 128
    red = predict.load_image(GOOD["animated.gif"])[0]
    assert (red[0] > 250).all() and (red[2] < 5).all(), "first frame (red) of the animation"
    clear, note = predict.load_image(encode(Image.new("RGBA", (40, 40), (0, 0, 0, 0)), "PNG"))
    assert "composited on white" in note and (clear == 255).all()  # fully transparent black -> white
    half, _ = predict.load_image(encode(Image.new("RGBA", (40, 40), (0, 0, 0, 128)), "PNG"))
    assert (half == 127).all()  # half-transparent black over white
    cmyk = predict.load_image(GOOD["cmyk.jpg"])[0].float()
    assert (cmyk - predict.load_image(GOOD["rgb.png"])[0].float()).abs().mean() < 6


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_refused_with_a_clear_message(name):
    raw, phrase = BAD[name]
    t0 = time.perf_counter()
    with pytest.raises(predict.ImageError, match=None) as info:
        predict.load_image(raw)
    assert phrase in str(info.value)
    assert time.perf_counter() - t0 < 2.0  # refused from the header: a bomb is never decoded


def test_paths(tmp_path):
    (tmp_path / "ok.png").write_bytes(GOOD["rgb.png"])
    assert tuple(predict.load_image(tmp_path / "ok.png")[0].shape) == (3, 32, 32)
    with pytest.raises(predict.ImageError, match="no such file"):
        predict.load_image(tmp_path / "missing.png")
    with pytest.raises(predict.ImageError, match="is a folder"):
        predict.load_image(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(predict.ImageError, match=r"empty.jpg is empty \(0 bytes\)"):
        predict.load_image(tmp_path / "empty.jpg")


# ---------------------------------------------------------------------------------------
# predict_all on hand-made deployed models (no training needed)
# ---------------------------------------------------------------------------------------
class Fixed(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)

    def forward(self, x):
        assert x.dtype == torch.uint8 and tuple(x.shape) == (1, 3, 32, 32)
        return self.logits.expand(len(x), -1)


class Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("out of cheese")


def test_predict_all_top_k_timing_and_isolation():
    classes = [f"c{i}" for i in range(10)]
    deployed = {
        "custom_cnn": deploy.Deployed(deploy.ROW["custom_cnn"], deploy.OK, Fixed([float(i) for i in range(10)])),
        "vit_small": deploy.Deployed(deploy.ROW["vit_small"], deploy.OK, Broken()),
        "resnet18": deploy.Deployed(deploy.ROW["resnet18"], deploy.NO_WEIGHTS),
    }
    image = predict.load_image(GOOD["rgb.png"])[0]
    cnn, vit, resnet = predict.predict_all(image, deployed, classes, top=5)
    expected = torch.softmax(torch.arange(10.0), 0).flip(0)[:5]
    assert [c for c, _ in cnn.top] == ["c9", "c8", "c7", "c6", "c5"] and cnn.prediction == "c9"
    assert torch.allclose(torch.tensor([p for _, p in cnn.top]), expected)
    assert cnn.ok and cnn.ms is None  # latency only when asked for
    cache = {}
    timed = predict.predict_all(image, deployed, classes, top=5, timed=cache)[0]
    assert timed.ms > 0 and list(cache.values()) == [timed.ms]
    assert predict.predict_all(image, deployed, classes, top=5, timed=cache)[0].ms == timed.ms  # measured once
    assert not vit.ok and "out of cheese" in vit.error
    assert not resnet.ok and resnet.status == deploy.NO_WEIGHTS and resnet.top == []
    table = predict.format_table([cnn, vit, resnet])
    assert "Custom CNN" in table and "c9 0.632" in table and "RuntimeError: out of cheese" in table
    assert " ms" not in table.splitlines()[0] and " ms" in predict.format_table([timed]).splitlines()[0]
    assert "not run: no pretrained weights" in table
    with pytest.raises(ValueError, match="uint8"):
        predict.predict_all(image.float(), deployed, classes)


class Counting(nn.Module):
    """Logits that identify the image (its mean pixel as class 0's logit), counting forward passes and their sizes."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(len(x))
        out = torch.zeros(len(x), 10)
        out[:, 0] = x.float().mean(dim=(1, 2, 3))
        return out


def test_predict_batch_runs_batches_and_keeps_the_order():
    model = Counting()
    deployed = {"custom_cnn": deploy.Deployed(deploy.ROW["custom_cnn"], deploy.OK, model),
                "resnet18": deploy.Deployed(deploy.ROW["resnet18"], deploy.NO_WEIGHTS)}
    images = torch.stack([torch.full((3, 32, 32), v, dtype=torch.uint8) for v in (0, 5, 250, 3, 7)])
    out = predict.predict_batch(images, deployed, top=10, batch_size=2)
    assert model.calls == [2, 2, 1]  # batched: ceil(5 / 2) forward passes, not one per image
    assert [len(per_model) for per_model in out] == [2] * 5
    for value, per_model in zip((0, 5, 250, 3, 7), out):  # each result belongs to its own image, in order
        expected = torch.softmax(torch.tensor([value / 1.0] + [0.0] * 9), 0)[0].item()
        assert dict(per_model[0].top)["airplane"] == pytest.approx(expected, rel=1e-5)  # names: data.CLASSES
    assert all(not per_model[1].ok and per_model[1].status == deploy.NO_WEIGHTS for per_model in out)
    with pytest.raises(ValueError, match="batch_size"):
        predict.predict_batch(images, deployed, batch_size=0)
    with pytest.raises(ValueError, match="uint8"):
        predict.predict_batch(images.float(), deployed)


def test_latency_needs_warm_up_passes():
    model = Counting()
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    assert predict.latency_ms(model, image) > 0
    assert len(model.calls) == predict.WARMUP + predict.TIMED and predict.WARMUP >= 10
    with pytest.raises(ValueError, match="warm-up"):
        predict.latency_ms(model, image, warmup=1)
    assert f"after {predict.WARMUP} warm-up passes" in predict.latency_note()


def test_example_indices_are_the_first_of_each_class():
    labels = torch.tensor([3, 1, 0, 1, 0, 2, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 6, 7, 8, 9])
    assert predict.example_indices(labels, 1) == [2, 1, 5, 0, 6, 7, 8, 9, 10, 11]
    assert predict.example_indices(labels, 2)[:4] == [2, 4, 1, 3]


# ---------------------------------------------------------------------------------------
# Command line on the quick-profile models
# ---------------------------------------------------------------------------------------
def test_cli_prints_a_table_per_image(quick_models, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("rgb.png", "grayscale.jpg", "animated.gif"):
        (folder / name).write_bytes(GOOD[name])
    (folder / "notes.txt").write_text("not an image: folders are expanded to image files only")
    (tmp_path / "cmyk.jpg").write_bytes(GOOD["cmyk.jpg"])
    code = predict.main([str(folder), str(tmp_path / "cmyk.jpg"), "--profile", "quick"])
    out = capsys.readouterr().out
    assert code == 0, out
    deployed = deploy.load_all("quick")
    ok = [d for d in deployed.values() if d.ok]
    assert {"custom_cnn", "vit_small"} <= {d.name for d in ok}
    tables = out.split("\n== ")[1:]
    assert [t.split()[0].rsplit("/", 1)[-1] for t in tables] == ["animated.gif", "grayscale.jpg", "rgb.png", "cmyk.jpg"]
    assert "animated (2 frames): first frame used" in out
    for table in tables:
        for d in ok:
            line = next(l for l in table.splitlines() if l.startswith(d.label + "  "))
            probs = [float(p) for p in re.findall(r"[a-z]+ (\d\.\d{3})", line[len(d.label):])]
            assert len(probs) == 5 and sum(probs) <= 1 + 1e-3 and probs == sorted(probs, reverse=True), line
        for d in deployed.values():
            if not d.ok:
                assert re.search(rf"^{re.escape(d.label)} +-- {re.escape(d.status)}$", table, re.M)


def test_cli_example_images(quick_models, capsys):
    assert predict.main(["--examples", "1", "--profile", "quick", "--model", "custom_cnn", "--top", "2"]) == 0
    out = capsys.readouterr().out
    tables = out.split("\n== ")[1:]
    assert len(tables) == 10 and "CIFAR-10 test image #3  (true class: airplane)" in out
    assert all(len(re.findall(r"[a-z]+ \d\.\d{3}", t.splitlines()[2])) == 2 for t in tables)


def test_cli_bad_input_exit_code(quick_models, tmp_path, capsys):
    (tmp_path / "ok.png").write_bytes(GOOD["rgb.png"])
    (tmp_path / "broken.png").write_bytes(BAD["truncated.png"][0])
    code = predict.main([str(tmp_path / "ok.png"), str(tmp_path / "broken.png"), str(tmp_path / "nope.jpg"),
                         "--profile", "quick", "--model", "custom_cnn", "--top", "3"])
    captured = capsys.readouterr()
    assert code == 1
    assert "ok.png" in captured.out and "Custom CNN (study recipe)" in captured.out and "ViT-Small" not in captured.out
    assert "top-3" in captured.out
    assert "broken.png could not be decoded" in captured.err and "nope.jpg: no such file" in captured.err
    assert "2 input(s) could not be read" in captured.err


def test_cli_without_trained_models_names_the_notebooks(artifact_root, real_data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STUDY_WEIGHTS_OFFLINE", "1")
    set_run_mode(monkeypatch, use_shipped=False)
    (tmp_path / "ok.png").write_bytes(GOOD["rgb.png"])
    code = predict.main([str(tmp_path / "ok.png"), "--profile", "quick", "--data-dir", str(real_data_dir)])
    err = capsys.readouterr().err
    assert code == 3
    assert "Custom CNN (study recipe): missing: run notebook 02_scratch_cnn" in err
    assert "ViT-Small (reference code): missing: run notebook 04_vit" in err
    assert "no deployed model for profile 'quick'" in err and "run_all.py --retrain" in err


def test_cli_usage_errors(capsys):
    for argv in (["x.png", "--model", "alexnet"], ["x.png", "--top", "11"], []):
        with pytest.raises(SystemExit) as info:
            predict.main(argv)
        assert info.value.code == 2
    assert "give at least one IMAGE" in capsys.readouterr().err


@pytest.fixture
def no_dataset(artifact_root, monkeypatch):
    """Every way of reading CIFAR-10 fails, as on a machine without the dataset; the shipped runs are used."""
    from studylib import data

    def missing(*args, **kw):
        raise data.DataError("CIFAR-10 not found (test: no dataset on this machine)")

    for name in ("resolve_data_dir", "load_cifar10", "load_profile_data", "read_classes"):
        monkeypatch.setattr(data, name, missing)
    set_run_mode(monkeypatch, use_shipped=True)
    monkeypatch.setenv("STUDY_WEIGHTS_OFFLINE", "1")
    deploy._CACHE.clear()
    yield
    deploy._CACHE.clear()


def test_cli_predicts_without_the_dataset_from_the_deployed_index(no_dataset, tmp_path, capsys):
    from studylib import data

    if "custom_cnn" not in deploy.read_index("full"):
        pytest.skip("runs/DEPLOYED.json does not list the Custom CNN")
    (tmp_path / "ok.png").write_bytes(GOOD["rgb.png"])
    assert predict.main([str(tmp_path / "ok.png"), "--model", "custom_cnn", "--top", "10"]) == 0
    out = capsys.readouterr().out
    assert "Custom CNN (study recipe)" in out and all(c in out for c in data.CLASSES)  # the package's class names


def test_cli_finds_a_row_the_index_does_not_list_without_the_dataset(no_dataset, tmp_path, monkeypatch):
    """A row's run is found by what its key records (deploy.find_run): no CIFAR-10 needed, index or not."""
    if "custom_cnn" not in deploy.read_index("full"):
        pytest.skip("runs/DEPLOYED.json does not list the Custom CNN")
    indexed = deploy.read_index("full")["custom_cnn"]["id"]
    (tmp_path / "ok.png").write_bytes(GOOD["rgb.png"])
    monkeypatch.setattr(deploy, "read_index", lambda profile: {})  # a row the index does not list
    assert predict.main([str(tmp_path / "ok.png"), "--model", "custom_cnn", "--format", "json",
                         "--output", str(tmp_path / "out.json")]) == 0
    (row,) = json.loads((tmp_path / "out.json").read_text())["models"]
    assert row["status"] == deploy.OK and row["run"] == indexed


def test_cli_exit_code_when_the_dataset_is_needed(no_dataset, capsys):
    assert predict.main(["--examples", "1"]) == predict.EXIT_NO_DATA == 4
    err = capsys.readouterr().err
    assert "CIFAR-10 is needed (--examples shows CIFAR-10 test images" in err and "$CIFAR10_DIR" in err
    assert predict.EXIT_NO_DATA not in (1, 3)  # the README's codes for an unreadable input and no model


def test_deployed_index_is_current(real_data_dir):
    """runs/DEPLOYED.json names the run each reference row's training job keys today, which is the run deploy finds
    by what keys record (refresh: python -m studylib.serve.deploy index)."""
    from studylib.recipes import experiments

    index = deploy.read_index("full")
    for key in ("custom_cnn", "custom_cnn_refcode", "vit_small", "vit_small_refcode"):
        if key in index:
            row = deploy.ROW[key]
            assert experiments.row_job(row, "full", data_dir=real_data_dir).run.id == index[key]["id"]
            assert deploy.reference_run(row, "full").id == index[key]["id"]


# ---------------------------------------------------------------------------------------
# Output formats, files, folders, batching, latency and TTA on the command line
# ---------------------------------------------------------------------------------------
def photo_tree(root):
    """photos/a.png, photos/sub/deeper/b.jpg, photos/.hidden/c.png (skipped), photos/notes.txt (not an image)."""
    (root / "photos" / "sub" / "deeper").mkdir(parents=True)
    (root / "photos" / ".hidden").mkdir()
    (root / "photos" / "a.png").write_bytes(GOOD["rgb.png"])
    (root / "photos" / "sub" / "deeper" / "b.jpg").write_bytes(GOOD["rgb.jpg"])
    (root / "photos" / ".hidden" / "c.png").write_bytes(GOOD["rgb.png"])
    (root / "photos" / "notes.txt").write_text("not an image")
    return root / "photos"


def test_cli_json_to_a_file_recursive_and_batched(quick_models, tmp_path, capsys):
    import json

    folder = photo_tree(tmp_path)
    out_file = tmp_path / "results" / "preds.json"
    code = predict.main([str(folder), "--profile", "quick", "--format", "json", "--output", str(out_file),
                         "--batch-size", "1", "--top", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == "" and f"wrote {out_file}" in captured.err
    assert [p.name for p in out_file.parent.iterdir()] == ["preds.json"]  # written via a temporary file, renamed
    doc = json.loads(out_file.read_text())
    assert [i["input"].rsplit("/", 1)[-1] for i in doc["inputs"]] == ["a.png", "b.jpg"]  # recursive, hidden skipped
    deployed = deploy.load_all("quick")
    assert [m["model"] for m in doc["models"]] == list(deployed) and doc["latency"] is None and doc["top"] == 3
    for item in doc["inputs"]:
        assert item["error"] is None and "32x32" in item["note"]
        for p in item["predictions"]:
            assert p["status"] == deployed[p["model"]].status
            if p["status"] == deploy.OK:
                assert len(p["top"]) == 3 and p["prediction"] == p["top"][0]["class"]
            else:
                assert p["top"] == [] and p["prediction"] is None


def test_cli_csv_names_unreadable_inputs_and_keeps_exit_code(quick_models, tmp_path, capsys):
    import csv
    import io

    (tmp_path / "ok.png").write_bytes(GOOD["rgb.png"])
    (tmp_path / "broken.png").write_bytes(BAD["truncated.png"][0])
    code = predict.main([str(tmp_path / "ok.png"), str(tmp_path / "broken.png"), "--profile", "quick",
                         "--model", "custom_cnn", "--format", "csv", "--top", "2"])
    captured = capsys.readouterr()
    assert code == 1 and "broken.png could not be decoded" in captured.err
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert list(rows[0]) == ["input", "true_class", "model", "label", "status", "rank", "class", "probability"]
    ok = [r for r in rows if r["input"].endswith("ok.png")]
    assert [r["rank"] for r in ok] == ["1", "2"] and all(r["model"] == "custom_cnn" and r["status"] == "ok" for r in ok)
    assert float(ok[0]["probability"]) >= float(ok[1]["probability"])
    (bad,) = [r for r in rows if r["input"].endswith("broken.png")]
    assert bad["status"].startswith("error: ") and "could not be decoded" in bad["status"] and bad["class"] == ""


def test_cli_latency_only_with_time_after_warm_up(quick_models, tmp_path, capsys):
    (tmp_path / "ok.png").write_bytes(GOOD["rgb.png"])
    assert predict.main([str(tmp_path / "ok.png"), "--profile", "quick", "--model", "custom_cnn"]) == 0
    plain = capsys.readouterr().out
    assert "warm-up" not in plain and " ms" not in plain
    assert predict.main([str(tmp_path / "ok.png"), "--profile", "quick", "--model", "custom_cnn", "--time"]) == 0
    timed = capsys.readouterr().out
    assert f"median of {predict.TIMED} single-image fp32 forward passes after {predict.WARMUP} warm-up passes" in timed
    latency = re.search(r"^Custom CNN \(study recipe\) +(\d+\.\d)$", timed, re.M)  # the latency table's line
    assert latency and float(latency.group(1)) > 0, timed


def test_cli_tta_where_a_row_offers_it(quick_models, tmp_path, capsys):
    (tmp_path / "ok.png").write_bytes(GOOD["rgb.png"])
    if not deploy.load_all("quick", keys=("strong_cnn",))["strong_cnn"].ok:
        pytest.skip("no quick strong-recipe run")
    assert predict.main([str(tmp_path / "ok.png"), "--profile", "quick", "--model", "strong_cnn", "--tta"]) == 0
    assert "Strong CNN (airbench-style recipe) + TTA (level 2)" in capsys.readouterr().out
    assert predict.main([str(tmp_path / "ok.png"), "--profile", "quick", "--model", "custom_cnn", "--tta"]) == 0
    assert "none of the chosen rows offers test-time augmentation" in capsys.readouterr().err


def test_cli_more_usage_errors(tmp_path, capsys):
    for argv, message in ((["x.png", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
                          (["x.png", "--output", str(tmp_path)], "is a folder; give a file name"),
                          (["x.png", "--format", "xml"], "invalid choice: 'xml'"),
                          (["--examples", "-1"], "--examples -1: must be 0 or more")):
        with pytest.raises(SystemExit) as info:
            predict.main(argv)
        assert info.value.code == 2
        assert message in capsys.readouterr().err
