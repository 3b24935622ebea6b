import numpy as np
import pytest
import torch
from torch import nn

from studylib import config, models, runs, runtime
from studylib.data import augment
from studylib.data.preprocess import Normalize
from studylib.models import scratch
from studylib.recipes import engine


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("name, kwargs, expected", [
    ("custom_cnn", {}, 2_462_282), ("custom_cnn", {"linear_init": "normal_0.01"}, 2_462_282),
    ("vit_small", {}, 3_195_146), ("vit_small", {"norm_first": False, "dropout": 0.1, "layer_init": "cloned"}, 3_195_146),
])
def test_scratch_param_counts(name, kwargs, expected):
    model = models.build_model(name, **kwargs)
    assert models.count_params(model) == {"total": expected, "trainable": expected}
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown model 'resnet19'"):
        models.build_model("resnet19")
    with pytest.raises(ValueError, match="registered twice"):
        models.register("custom_cnn")(lambda: None)
    with pytest.raises(ValueError, match="linear_init must be one of"):
        models.build_model("custom_cnn", linear_init="xavier")


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_layer_matches_torch_transformer_encoder_layer(norm_first):
    """Our explicit-matmul layer computes what nn.TransformerEncoderLayer(gelu, batch_first) computes, pre- and
    post-norm, with the same weights (eval mode: dropout off)."""
    torch.manual_seed(0)
    ours = scratch.EncoderLayer(32, 4, 64, dropout=0.1, norm_first=norm_first).eval()
    ref = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, activation="gelu", batch_first=True,
                                     norm_first=norm_first).eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(ours.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(ours.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(ours.proj.weight)
        ref.self_attn.out_proj.bias.copy_(ours.proj.bias)
        ref.linear1.load_state_dict(ours.mlp[0].state_dict())
        ref.linear2.load_state_dict(ours.mlp[3].state_dict())
        ref.norm1.load_state_dict(ours.norm1.state_dict())
        ref.norm2.load_state_dict(ours.norm2.state_dict())
    x = torch.randn(2, 5, 32)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)


def test_reference_code_vit_is_post_norm_with_dropout_and_cloned_layers():
    torch.manual_seed(0)
    vit = models.build_model("vit_small", **config.RECIPES["reference_code"]["vit_small"])
    blocks = list(vit.blocks)
    assert all(not b.norm_first for b in blocks)
    assert {m.p for m in vit.modules() if isinstance(m, nn.Dropout)} == {0.1}
    first = blocks[0].state_dict()
    assert all(torch.equal(b.state_dict()[k], first[k]) for b in blocks[1:] for k in first)  # deep copies of one layer
    assert torch.count_nonzero(blocks[0].qkv.bias) == 0 and torch.count_nonzero(blocks[0].proj.bias) == 0
    study = models.build_model("vit_small", **config.RECIPES["study"]["vit_small"])
    assert not torch.equal(study.blocks[0].qkv.weight, study.blocks[1].qkv.weight)  # independent layers
    assert all(b.norm_first for b in study.blocks) and not any(isinstance(m, nn.Dropout) and m.p > 0
                                                                for m in study.modules())


def test_reference_code_cnn_linear_init_is_normal_0_01():
    torch.manual_seed(0)
    ref = models.build_model("custom_cnn", **config.RECIPES["reference_code"]["custom_cnn"])
    w = torch.cat([m.weight.flatten() for m in ref.classifier if isinstance(m, nn.Linear)])
    assert abs(w.std().item() - 0.01) < 0.0005 and abs(w.mean().item()) < 0.0005
    assert all(torch.count_nonzero(m.bias) == 0 for m in ref.classifier if isinstance(m, nn.Linear))
    kaiming = models.build_model("custom_cnn").classifier[2].weight
    assert kaiming.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.05)  # He normal, fan_in 512


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


def _augment(recipe: str) -> augment.ScratchAugment:
    r = config.recipe(recipe, "quick")
    return augment.ScratchAugment(**{**r["augment"], "crop_padding": 0, "hflip_p": 0.0, "mix_p": 0.0},
                                  normalize=Normalize(r["normalize"]["mean"], r["normalize"]["std"]))


def test_cutout_after_normalise_fills_with_the_per_channel_mean():
    """The reference's code applies CutOut after Normalize: masked pixels are 0 in normalised space, i.e. the
    per-channel mean colour once de-normalised; the study recipe blacks them out before normalising."""
    x = torch.full((16, 3, 32, 32), 255, dtype=torch.uint8)
    y = torch.zeros(16, dtype=torch.long)
    ref = _augment("reference_code")(x, y, torch.Generator().manual_seed(0)).images
    r = config.recipe("reference_code")
    mean, std = torch.tensor(r["normalize"]["mean"]).view(1, 3, 1, 1), torch.tensor(r["normalize"]["std"]).view(1, 3, 1, 1)
    pixels = ref * std + mean
    masked = (pixels < 0.99).all(1)   # every channel below white: inside the square
    assert masked.flatten(1).sum(1).min() >= 64
    assert torch.allclose(pixels.permute(1, 0, 2, 3)[:, masked], mean.view(3, 1).expand(3, int(masked.sum())), atol=1e-6)
    study = _augment("study")(x, y, torch.Generator().manual_seed(0)).images
    s = config.recipe("study")["normalize"]
    black = (torch.tensor(0.0) - torch.tensor(s["mean"])) / torch.tensor(s["std"])
    assert torch.allclose(study.permute(1, 0, 2, 3)[:, masked], black.view(3, 1).expand(3, int(masked.sum())), atol=1e-6)


def test_mixup_cutmix_label_weights():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 3, 32, 32)
    x[2:] = 1.0
    perm = torch.tensor([2, 3, 0, 1])
    mixed = augment.mixup(x, perm, 0.3)
    assert torch.allclose(mixed[0], torch.full_like(mixed[0], 0.7))
    cut, lam = augment.cutmix(x, perm, 0.75, gen)
    assert np.isclose(1 - lam, cut[0].mean().item())  # weight = share of pixels kept from the original


def test_scratch_augment_is_seeded_and_mixes_about_half_the_batches():
    r = config.recipe("study", "quick")
    aug = augment.ScratchAugment(**r["augment"], normalize=Normalize(r["normalize"]["mean"], r["normalize"]["std"]))
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(32) % 10
    outs = [aug(x, y, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(outs[0].images, outs[1].images) and outs[0].lam == outs[1].lam
    assert outs[0].images.dtype == torch.float32 and outs[0].images.shape == x.shape
    lams = [aug(x, y, torch.Generator().manual_seed(s)).lam for s in range(40)]
    assert 8 < sum(lam < 1.0 for lam in lams) < 32


def test_normalisation_constants_match_data(real_data_dir):
    from studylib import data
    mean, std = data.channel_stats(data.load_cifar10("train", real_data_dir).images)
    assert np.allclose(mean, config.CIFAR10_MEAN, atol=1e-4) and np.allclose(std, config.CIFAR10_STD, atol=1e-4)


# ----------------------------------------------------------------------------- engine
class Interrupt(Exception):
    pass


def _tiny_fit(root, *, stop_after_epoch=None, drop_last=False, epochs=4):
    """A 2-layer net on 64 random 8x8 images through engine.fit (CPU, fp32): a unit test of the loop."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 10))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (96,), generator=g)
    norm = Normalize(config.CIFAR10_MEAN, config.CIFAR10_STD)
    aug = augment.ScratchAugment(crop_padding=1, hflip_p=0.5, cutout_size=2, cutout_after_normalize=False, mix_p=0.5,
                                 mixup_alpha=0.2, cutmix_alpha=1.0, normalize=norm)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)

    def batches(epoch):
        if stop_after_epoch is not None and epoch == stop_after_epoch:
            raise Interrupt
        return engine.shuffled_batches(x[:64], y[:64], seed=3, epoch=epoch, batch_size=24, augment=aug,
                                       drop_last=drop_last)

    plan = engine.Plan(epochs=epochs, optimizer=opt, batches=batches,
                       steps_per_epoch=engine.steps_per_epoch(64, 24, drop_last),
                       scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs),
                       evaluate=lambda: engine.batched_logits(model, x[64:], prepare=norm))
    run = runs.Run("tiny", "net", {"drop_last": drop_last, "epochs": epochs}, "quick")
    run.ensure(lambda r: engine.fit(r, model, plan, test_labels=y[64:], train_n=64, device="cpu", precision="fp32",
                                      progress=False))
    return run


def test_fit_writes_a_run_and_is_repeatable(artifact_root, tmp_path, monkeypatch, capsys):
    a = _tiny_fit(artifact_root)
    assert sorted(p.name for p in a.folder.iterdir()) == ["history.csv", "metrics.json", "model.pt", "predictions.npz"]
    h = a.history()
    assert list(h.lr) == pytest.approx([1e-2 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)])
    m = a.metrics
    assert m["test_n"] == 32 and m["steps"] == 4 * 3 and m["params_total"] == 3 * 64 * 16 + 16 + 170
    assert m["flush_denormal"] is torch.set_flush_denormal(False)  # trained with denormals flushed where the CPU can
    p = a.predictions()
    assert set(p) == {"index", "y", "pred", "p_true", "p_pred"} and len(p["pred"]) == 32
    assert m["test_acc"] == pytest.approx(float((p["pred"] == p["y"]).mean()))
    assert (p["p_pred"] >= p["p_true"]).all()
    assert "ETA" in capsys.readouterr().out  # per-epoch progress lines
    monkeypatch.setenv(config.ARTIFACTS_DIR_ENV, str(tmp_path / "other"))
    b = _tiny_fit(tmp_path / "other")
    assert h.drop(columns="seconds").equals(b.history().drop(columns="seconds"))


def test_drop_last_drops_the_partial_batch(artifact_root):
    assert _tiny_fit(artifact_root, drop_last=True, epochs=1).metrics["steps"] == 2  # 64 images, batch 24


@pytest.mark.parametrize("stop_after", [1, 3])
def test_interrupted_run_resumes_to_the_same_result(artifact_root, tmp_path, monkeypatch, stop_after):
    with pytest.raises(Interrupt):
        _tiny_fit(artifact_root, stop_after_epoch=stop_after)
    cut = runs.Run("tiny", "net", {"drop_last": False, "epochs": 4}, "quick")
    assert (cut.folder / "checkpoint.pt").exists() and not cut.done
    resumed = _tiny_fit(artifact_root)
    monkeypatch.setenv(config.ARTIFACTS_DIR_ENV, str(tmp_path / "full"))
    full = _tiny_fit(tmp_path / "full")
    assert resumed.history().drop(columns="seconds").equals(full.history().drop(columns="seconds"))
    assert np.array_equal(resumed.predictions()["pred"], full.predictions()["pred"])
    assert not (resumed.folder / "checkpoint.pt").exists()


def test_device_resolution():
    assert runtime.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        runtime.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            runtime.resolve_device("cuda")
    with pytest.raises(ValueError, match="precision"):
        runtime.autocast(torch.device("cpu"), "fp16")


def test_device_label_names_where_a_run_trained():
    env = {"cpu": "AMD EPYC", "gpu": "NVIDIA H200"}
    assert runtime.device_label({"device": "cpu", "environment": {**env, "threads": 2}}) == "cpu (AMD EPYC, 2 threads)"
    assert runtime.device_label({"device": "cpu", "environment": {**env, "threads": 1}}) == "cpu (AMD EPYC, 1 thread)"
    assert runtime.device_label({"device": "cuda:0", "environment": env}) == "cuda (NVIDIA H200)"
