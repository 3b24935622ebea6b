"""The strong from-scratch recipe's pieces (whitening, translation, TTA, network) and the
Custom CNN data-efficiency entry point, on toy inputs."""

import pytest
import torch

from studylib import efficiency, models, strong


def test_whitening_layer_whitens_patches():
    gen = torch.Generator().manual_seed(0)
    # correlated channels: the whitened 2x2 patches must come out (close to) decorrelated, unit variance
    base = torch.randn(64, 1, 16, 16, generator=gen)
    x = torch.cat([base, 0.8 * base + 0.2 * torch.randn(64, 1, 16, 16, generator=gen),
                   torch.randn(64, 1, 16, 16, generator=gen)], 1)
    conv = torch.nn.Conv2d(3, 24, 2, bias=False)
    strong.init_whitening(conv, x, eps=1e-6)
    with torch.no_grad():
        y = conv(x)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    cov = (y.T @ y) / len(y)
    assert torch.allclose(cov, torch.eye(12), atol=0.05)
    assert torch.allclose(conv.weight[12:], -conv.weight[:12])  # +/- pairs


def test_random_translate_is_a_shifted_reflect_crop():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    assert torch.equal(strong.random_translate(x, 0, gen), x)
    out = strong.random_translate(x, 2, gen)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")
    for i in range(2):
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))


def test_network_shape_params_and_tta():
    torch.manual_seed(0)
    net = strong.strong_cnn()
    assert models.count_params(net)["total"] == 1_972_792
    assert not net[0].weight.requires_grad
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    net.eval()
    plain = strong.predict_tta(net, images, torch.device("cpu"), 0, "fp32")
    with torch.no_grad():
        assert torch.allclose(plain, net(strong.normalize(images)), atol=1e-5)
    flip = strong.predict_tta(net, images, torch.device("cpu"), 1, "fp32")
    flip_of_flipped = strong.predict_tta(net, images.flip(-1), torch.device("cpu"), 1, "fp32")
    assert torch.allclose(flip, flip_of_flipped, atol=1e-5)  # mirror TTA is flip invariant
    assert strong.predict_tta(net, images, torch.device("cpu"), 2, "fp32").shape == (4, 10)


def test_hyperparameters_stay_inside_the_study_budget():
    assert strong.HYP["epochs"] <= 15
    assert strong.hyp_for("quick")["batch_size"] < strong.HYP["batch_size"]


def test_efficiency_refuses_non_scratch_models():
    with pytest.raises(KeyError, match="not a scratch model"):
        efficiency.scratch_point("mobilenet_v2", "quick", per_class=10, seed=0)


def test_finetune_net_trains_every_layer_and_keeps_preprocessing():
    from studylib import finetune, probes, transfer

    net = probes.with_input_size(transfer.build_transfer("mobilenet_v2", weights_spec=None), 32)
    ft = finetune.FineTuneNet(net)
    assert all(p.requires_grad for p in ft.parameters())
    ft.train()
    assert ft.backbone.training  # BatchNorm adapts, unlike the frozen TransferNet
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert ft(images).shape == (4, 10)
    batch = finetune.CropFlip(4, 0.5)(images, torch.arange(4), torch.Generator().manual_seed(0))
    assert batch.images.dtype == torch.uint8 and batch.images.shape == images.shape and batch.lam == 1.0


def test_cpu_full_run_benchmark_times_a_whole_run_in_a_throwaway_store(real_data_dir, artifact_root):
    import json
    import os
    import subprocess
    import sys

    from studylib import config

    env = {**os.environ, config.DATA_DIR_ENV: str(real_data_dir), config.ARTIFACTS_DIR_ENV: str(artifact_root)}
    cmd = [sys.executable, str(config.PROJ_ROOT / "benchmarks" / "bench_strong.py"), "--full-run", "--profile",
           "quick", "--threads", "1"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    result = json.loads((artifact_root / "bench" / "strong_cpu_run-quick.json").read_text())
    assert result["profile"] == "quick" and result["hyp"] == json.loads(json.dumps(strong.hyp_for("quick")))
    assert 0.0 <= result["test_acc"] <= 1.0 and result["test_n"] == 500
    assert result["wall_seconds"] >= result["train_seconds"] > 0
    # the run's model and logits lived in a temporary store: the real one holds only the result
    assert [p.relative_to(artifact_root).as_posix() for p in artifact_root.rglob("*")] == \
        ["bench", "bench/strong_cpu_run-quick.json"]
