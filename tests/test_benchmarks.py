"""benchmarks/: run as a user runs them (``python -m benchmarks.<name>`` in a subprocess, 1 thread), their
JSON written to a temporary folder ($BENCH_RESULTS_DIR) and checked; plus the grouped-convolution FLOP
count of benchmarks.timing. Each subprocess takes well under a minute on 2 cores."""

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks import timing
from studylib import config, runtime, weights

SHARED = config.PROJ_ROOT.parent / "shared"
WEIGHTS_DIR = os.environ.get(weights.WEIGHTS_DIR_ENV) or str(SHARED / "weights")
LIMIT_STAGES = {"custom_cnn train", "vit_small train", "custom_cnn eval", "vit_small eval", "head train",
                "finetune mobilenet_v2_float", "int8 custom_cnn batch 1", "int8 custom_cnn batch 64",
                *(f"{stage} {b}{v}" for b in ("mobilenet_v2_float", "efficientnet_lite0")
                  for stage, v in (("extract", ""), ("extract", ", BN folded"), ("reevaluate", ""),
                                   ("reevaluate", ", torch, BN folded"), ("reevaluate", ", torch, BN not folded")))}


def run_benchmark(module: str, args: list[str], tmp_path: Path, data_dir: Path | None = None) -> tuple[dict, Path]:
    """Run ``python -m benchmarks.<module> args`` with results, artifact store and temp files under tmp_path;
    returns (the one JSON result it wrote, the artifact store folder)."""
    results, store, tmp = tmp_path / "results", tmp_path / "store", tmp_path / "tmp"
    store.mkdir()
    tmp.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", timing.RESULTS_DIR_ENV: str(results),
           config.ARTIFACTS_DIR_ENV: str(store), weights.WEIGHTS_DIR_ENV: WEIGHTS_DIR, weights.OFFLINE_ENV: "1",
           "TMPDIR": str(tmp)}
    if data_dir is not None:
        env[config.DATA_DIR_ENV] = str(data_dir)
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args], cwd=config.PROJ_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    written = sorted(results.glob("*.json"))
    assert len(written) == 1, written
    assert not list(tmp.glob("strong-full-run-*")), "bench_strong left its temporary store behind"
    return json.loads(written[0].read_text()), store


def positive(v) -> bool:
    return isinstance(v, (int, float)) and v > 0 and math.isfinite(v)


@pytest.mark.e2e  # runs a whole benchmark script (the strong one trains a quick model)
def test_bench_limits_smoke(tmp_path):
    # random images: no CIFAR-10 needed; ImageNet weights where found, else untrained (speed is the same)
    record, store = run_benchmark("bench_limits", ["--smoke", "--threads", "1"], tmp_path)
    assert record["name"] == "limits_smoke" and record["smoke"] is True and record["threads"] == 1
    assert record["machine"]["cpu_model"] and record["machine"]["threads"] == 1
    stages = {r["stage"]: r for r in record["stages"]}
    assert set(stages) == LIMIT_STAGES
    for name, r in stages.items():
        for key in ("images_per_s", "flops_per_image", "gflops", "fraction_of_limit", "implied_minutes"):
            assert positive(r[key]), (name, key, r[key])
    # forward + backward of a plain CNN is 3 forwards less the first layer's input gradient
    ratio = stages["custom_cnn train"]["flops_per_image"] / stages["custom_cnn eval"]["flops_per_image"]
    assert 2.9 < ratio <= 3.0
    assert stages["int8 custom_cnn batch 64"]["batch"] == 64 and stages["int8 custom_cnn batch 1"]["batch"] == 1
    floor = record["floor_01_07"]
    assert positive(floor["floor_minutes"]) and floor["implied_minutes"] >= floor["floor_minutes"]
    assert "finetune mobilenet_v2_float" not in floor["stages"]  # notebook 12, not 01-07
    assert "reevaluate efficientnet_lite0" in floor["stages"]  # notebook 05's path, counted once
    assert not any(s.endswith(("BN folded", "BN not folded")) for s in floor["stages"])  # alternatives, not work
    assert stages["reevaluate mobilenet_v2_float"]["engine"] == "onnxruntime"  # notebook 05's CPU path
    assert stages["reevaluate mobilenet_v2_float, torch, BN folded"]["batchnorm_folded"] == 52
    assert stages["reevaluate mobilenet_v2_float, torch, BN not folded"]["batchnorm_folded"] == 0
    assert list(store.iterdir()) == []  # a benchmark writes nothing into the artifact store


@pytest.mark.e2e  # runs a whole benchmark script
def test_profile_stages_smoke_names_the_int8_reference_models_operators(tmp_path):
    record, store = run_benchmark("profile_stages", ["--smoke", "--threads", "1", "--no-compile"], tmp_path)
    stages = record["stages"]
    assert {"custom_cnn batch 1 (fp32)", "custom_cnn batch 1 (static int8, PT2E reference model)"} <= set(stages)
    for name, rec in stages.items():
        assert positive(rec["eager_images_per_s"]) and rec["top_operators"], name
        assert 0.5 < sum(o["share"] for o in rec["top_operators"]) <= 1 + 1e-9  # the top ten hold most of the time
    int8_ops = {o["op"] for o in stages["custom_cnn batch 1 (static int8, PT2E reference model)"]["top_operators"]}
    assert any(op.startswith("quantized_decomposed::") for op in int8_ops)  # the (de)quantize ops it runs in float
    assert not any(op.startswith("quantized_decomposed::")
                   for op in (o["op"] for o in stages["custom_cnn batch 1 (fp32)"]["top_operators"]))
    assert list(store.iterdir()) == []


@pytest.mark.e2e  # runs a whole benchmark script (the strong one trains a quick model)
def test_bench_strong_quick_full_run(tmp_path, real_data_dir):
    record, store = run_benchmark("bench_strong", ["--full-run", "--profile", "quick", "--threads", "1"], tmp_path,
                                  real_data_dir)
    assert record["name"] == "strong_quick_run"  # never strong_full_run: notebook 08 must not read it as the full run
    assert record["profile"] == "quick" and record["seed"] == 0 and record["threads"] == 1
    assert 0 <= record["test_acc"] <= 1 and 0 <= record["test_acc_tta"] <= 1
    assert record["wall_seconds"] > record["train_seconds"] > 0 and positive(record["images_per_s"])
    assert record["target"] == {k: config.grid("strong")[k] for k in ("cpu_target_acc", "cpu_target_minutes")}
    assert record["target_met"] is None  # the target is the full profile's
    assert record["machine"]["cpu_model"] and record["machine"]["threads"] == 1 and record["written_utc"]
    assert list(store.iterdir()) == []  # the run trained in a throw-away store, deleted afterwards


def test_grouped_conv_backward_flops_are_not_overcounted():
    """torch's FlopCounterMode counts a grouped conv's weight gradient `groups` times over; timing corrects it."""
    x = torch.randn(1, 32, 8, 8)  # input needs no grad: backward = the weight gradient only
    for groups in (1, 32):
        conv = nn.Conv2d(32, 32, 3, padding=1, groups=groups, bias=False)
        forward = timing.flops_per_example(conv, x, backward=False)
        assert forward == 2 * 9 * (32 // groups) * 32 * 8 * 8
        assert timing.flops_per_example(conv, x, backward=True) == 2 * forward
        assert timing.flops_per_example(conv, x.clone().requires_grad_(True), backward=True) == 3 * forward


@pytest.mark.e2e  # runs a whole benchmark script
def test_bench_batch_smoke_times_each_path_against_batch_64(tmp_path):
    record, store = run_benchmark("bench_batch", ["--smoke", "--threads", "1"], tmp_path)
    assert record["name"] == "batch_smoke" and record["baseline_batch"] == 64
    rows = record["rows"]
    stages = {r["stage"] for r in rows}
    assert stages == {f"{p} {b} 64px" for p in ("extract", "reevaluate", "reevaluate torch")
                      for b in ("mobilenet_v2_float", "efficientnet_lite0")}
    for stage in stages:
        mine = {r["batch"]: r for r in rows if r["stage"] == stage}
        assert set(mine) == {4, 64}
        assert mine[64]["speedup_vs_64"] == 1.0 and mine[64]["max_abs_diff_vs_64"] == 0.0
        assert all(positive(r["images_per_s"]) and positive(r["fraction_of_limit"]) for r in mine.values())
        assert sum(r["default"] != "" for r in mine.values()) <= 1
        if stage.startswith("reevaluate"):  # fp32: the batch size changes no logit the study records
            assert mine[4]["max_abs_diff_vs_64"] < 1e-4
    assert list(store.iterdir()) == []


def test_bench_finetune_allocator_smoke_compares_both_steps_under_both_allocators(tmp_path):
    record, _ = run_benchmark("bench_finetune", ["--allocator", "--smoke", "--threads", "1"], tmp_path)
    assert record["name"] == "finetune_allocator_smoke"
    a = record["allocator"]
    assert a["tunables"] == runtime.ALLOCATOR_TUNABLES and a["rounds"] == 1
    assert {(r["variant"], r["allocator"]) for r in a["rows"]} == {(v, alloc) for v in ("baseline", "fp32")
                                                                   for alloc in ("default", "tuned")}
    base = next(r for r in a["rows"] if (r["variant"], r["allocator"]) == ("baseline", "default"))
    assert base["ratio_to_baseline"] == 1.0
    assert all(positive(r["images_per_s"]) and r["page_faults_per_step"] >= 0 for r in a["rows"])


def test_the_allocator_setting_is_given_to_training_processes_and_recorded(monkeypatch):
    monkeypatch.delenv(runtime.ALLOCATOR_ENV, raising=False)
    expected = {runtime.ALLOCATOR_ENV: runtime.ALLOCATOR_TUNABLES} if platform.libc_ver()[0] == "glibc" else {}
    assert runtime.allocator_env() == expected
    assert runtime.environment()["allocator"] == "default"
    monkeypatch.setenv(runtime.ALLOCATOR_ENV, "glibc.malloc.arena_max=2")  # the user's own choice is kept
    assert runtime.allocator_env() == {} and runtime.environment()["allocator"] == "glibc.malloc.arena_max=2"
    # a command started without it restarts once with it: the child sees the setting and restarts no more
    monkeypatch.delenv(runtime.ALLOCATOR_ENV)
    code = ("import os, sys; from studylib import runtime; print('start', flush=True); "
            "runtime.restart_with_allocator(); print(os.environ.get(runtime.ALLOCATOR_ENV))")
    out = subprocess.run([sys.executable, "-c", code], cwd=config.PROJ_ROOT, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    if expected:
        assert out == ["start", "start", runtime.ALLOCATOR_TUNABLES]
    else:
        assert out == ["start", "None"]


def test_bench_finetune_denormals_smoke_times_kept_against_flushed(tmp_path):
    record, _ = run_benchmark("bench_finetune", ["--denormals", "--smoke", "--threads", "1"], tmp_path)
    d = record["denormals"]
    assert record["name"] == "finetune_denormals_smoke" and d["denormals_injected"] > 600_000
    assert [r["state"] for r in d["rows"]] == ["fresh weights", "denormals kept", "denormals flushed"]
    assert all(positive(r["images_per_s"]) for r in d["rows"]) and d["rows"][1]["ratio_to_denormals_kept"] == 1.0


@pytest.mark.e2e  # compiles the Custom CNN's int8 graph at two batch sizes (about a minute on 2 cores)
def test_bench_int8_smoke_profiles_the_compiled_int8_path_at_batch_1(tmp_path, real_data_dir):
    """bench_int8 on the shipped Custom CNN: every path timed against PyTorch fp32, the compiled PT2E path among
    them, and with --profile-batch1 the preprocess's share and the top operators of both PyTorch paths at batch 1."""
    record, _ = run_benchmark("bench_int8", ["--smoke", "--threads", "1", "--pt2e-compiled", "--profile-batch1"],
                              tmp_path, data_dir=real_data_dir)
    paths = {r["path"]: r for r in record["rows"]}
    assert set(paths) == {"fp32 torch", "fp32 onnxruntime", "int8 onnxruntime (QDQ)", "int8 torch (PT2E)",
                          "int8 torch (PT2E, torch.compile)"}
    assert all(positive(r["latency_ms_batch1"]) and positive(r["speedup_vs_torch_fp32_b1"]) for r in paths.values())
    for name in ("fp32 torch", "int8 torch (PT2E, torch.compile)"):
        prof = paths[name]["batch1_profile"]
        assert 0 < prof["preprocess_share"] < 1 and prof["top_ops"]
        assert abs(sum(o["share"] for o in prof["top_ops"]) - 1) < 0.5  # the top 12 hold most of the time
    assert "batch1_profile" not in paths["int8 onnxruntime (QDQ)"]
