import numpy as np
import pytest
import torch

from studylib import artifacts, augment, config, models, train


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("name, expected", [("custom_cnn", 2_462_282), ("vit_small", 3_195_146)])
def test_scratch_param_counts(name, expected):
    model = models.build_model(name)
    counts = models.count_params(model)
    assert counts == {"total": expected, "trainable": expected}
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown model 'resnet19'"):
        models.build_model("resnet19")
    with pytest.raises(ValueError, match="registered twice"):
        models.register("custom_cnn")(lambda: None)


def test_vit_attention_matches_pytorch_reference():
    """The hand-written attention equals torch's scaled_dot_product_attention."""
    torch.manual_seed(0)
    layer = models.EncoderLayer(32, 4, 64, dropout=0.0).eval()
    x = torch.randn(2, 5, 32)
    b, n, d = x.shape
    q, k, v = layer.qkv(layer.norm1(x)).view(b, n, 3, 4, 8).permute(2, 0, 3, 1, 4)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
    ref = x + layer.proj(ref)
    ref = ref + layer.mlp(layer.norm2(ref))
    assert torch.allclose(layer(x), ref, atol=1e-5)


# ----------------------------------------------------------------------------- augmentation
def test_random_crop_is_a_shifted_window():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = augment.random_crop(x, 2, gen)
    gen = torch.Generator().manual_seed(0)
    oy = torch.randint(0, 5, (2, 1, 1), generator=gen)
    ox = torch.randint(0, 5, (2, 1, 1), generator=gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        y0, x0 = oy[i].item(), ox[i].item()
        assert torch.equal(out[i], padded[i, :, y0:y0 + 8, x0:x0 + 8])


def test_hflip_and_cutout():
    x = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    x[:, :, :, 0] = 7
    gen = torch.Generator().manual_seed(1)
    flipped = augment.hflip(x, 0.5, gen)
    n_flipped = int((flipped[:, 0, 0, -1] == 7).sum())
    assert 10 < n_flipped < 54 and torch.equal(flipped.flip(3)[flipped[:, 0, 0, 0] != 7], x[flipped[:, 0, 0, 0] != 7])
    cut = augment.cutout(torch.full((500, 1, 32, 32), 1, dtype=torch.uint8), 16, gen)
    zeros = (cut == 0).flatten(1).sum(1)
    assert zeros.max() == 256 and zeros.min() >= 64  # full square inside, at least a quarter at a corner


def test_mixup_cutmix_label_weights():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 3, 32, 32)
    x[2:] = 1.0
    perm = torch.tensor([2, 3, 0, 1])
    mixed = augment.mixup(x, perm, 0.3)
    assert torch.allclose(mixed[0], torch.full_like(mixed[0], 0.7))
    cut, lam = augment.cutmix(x, perm, 0.75, gen)
    assert np.isclose(1 - lam, cut[0].mean().item())  # weight = share of pixels kept from the original


def test_scratch_augment_is_seeded_and_normalises():
    cfg = config.get_profile("quick")
    aug = train.scratch_augment(cfg)
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(32) % 10
    outs = [aug(x, y, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(outs[0].images, outs[1].images) and outs[0].lam == outs[1].lam
    assert outs[0].images.dtype == torch.float32 and outs[0].images.shape == x.shape
    lams = [aug(x, y, torch.Generator().manual_seed(s)).lam for s in range(40)]
    assert 8 < sum(lam < 1.0 for lam in lams) < 32  # MixUp/CutMix on about half the batches


def test_normalisation_constants_match_data(real_data_dir):
    from studylib import data
    mean, std = data.channel_stats(data.load_cifar10("train", real_data_dir).images)
    assert np.allclose(mean, config.CIFAR10_MEAN, atol=1e-4) and np.allclose(std, config.CIFAR10_STD, atol=1e-4)


# ----------------------------------------------------------------------------- engine
def _tiny_fit(out_dir, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.Dropout(0.3),
                                torch.nn.ReLU(), torch.nn.Linear(16, 10))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (96,), generator=g)
    aug = augment.ScratchAugment(crop_padding=1, hflip_p=0.5, cutout_size=2, mix_p=0.5, mixup_alpha=0.2,
                                 cutmix_alpha=1.0, mean=config.CIFAR10_MEAN, std=config.CIFAR10_STD)
    return train.fit(model, x[:64], y[:64], x[64:], y[64:], out_dir=out_dir, epochs=4, batch_size=16, lr=1e-2,
                     weight_decay=1e-4, seed=3, prepare=aug.normalize, augment=aug, device="cpu", **kw)


def test_fit_writes_artifacts_and_is_repeatable(tmp_path):
    a = _tiny_fit(tmp_path / "a")
    b = _tiny_fit(tmp_path / "b")
    assert a.history.drop(columns="seconds").equals(b.history.drop(columns="seconds"))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["history.csv", "metrics.json", "model.pt",
                                                                   "test_logits.pt"]
    assert list(a.history.lr) == pytest.approx([1e-2 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)])
    assert a.metrics["test_n"] == 32 and a.metrics["params_total"] == 3 * 64 * 16 + 16 + 170


def test_finished_run_is_reused(tmp_path):
    first = _tiny_fit(tmp_path / "r")
    again = _tiny_fit(tmp_path / "r")
    assert again.reused and not first.reused and again.metrics == first.metrics
    assert all(torch.equal(p, q) for p, q in zip(first.model.state_dict().values(), again.model.state_dict().values()))


@pytest.mark.parametrize("stop_after", [1, 3])  # mid-run, and after the last epoch's checkpoint
def test_interrupted_run_resumes_to_the_same_result(tmp_path, stop_after):
    full = _tiny_fit(tmp_path / "full")

    def interrupt(epoch):
        if epoch == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tiny_fit(tmp_path / "cut", on_epoch_end=interrupt)
    assert (tmp_path / "cut" / "checkpoint.pt").exists() and not (tmp_path / "cut" / "metrics.json").exists()
    resumed = _tiny_fit(tmp_path / "cut")
    assert not resumed.reused and len(resumed.history) == 4
    assert resumed.history.drop(columns="seconds").equals(full.history.drop(columns="seconds"))
    assert torch.equal(torch.load(tmp_path / "cut" / "test_logits.pt"), torch.load(tmp_path / "full" / "test_logits.pt"))


def test_device_resolution():
    assert train.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        train.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            train.resolve_device("cuda")
    with pytest.raises(ValueError, match="precision"):
        train.autocast(torch.device("cpu"), "fp16")


def test_train_from_scratch_keys_by_profile_and_seed(real_data_dir, artifact_root, monkeypatch):
    monkeypatch.setenv(config.DATA_DIR_ENV, str(real_data_dir))
    r = train.train_from_scratch("custom_cnn", "quick", epochs=1, train_per_class=10, test_per_class=5, progress=False)
    assert r.out_dir.is_relative_to(artifact_root / "quick" / "train") and r.metrics["test_n"] == 50
    assert train.train_from_scratch("custom_cnn", "quick", epochs=1, train_per_class=10, test_per_class=5).reused
    other = train.train_from_scratch("custom_cnn", "quick", seed=0, epochs=1, train_per_class=10, test_per_class=5)
    assert other.out_dir != r.out_dir and not other.reused
    forced = train.train_from_scratch("custom_cnn", "quick", epochs=1, train_per_class=10, test_per_class=5, force=True)
    assert not forced.reused and forced.out_dir == r.out_dir
    with pytest.raises(KeyError, match="not a scratch model"):
        train.train_from_scratch("resnet18", "quick")
