"""benchmarks/timing.py: FLOP counts against hand counts, the limit measurement, report arithmetic, result files."""

import json
import math

import pytest
import torch
from torch import nn

from benchmarks import timing


# What torch.utils.flop_counter.FlopCounterMode counts (checked with torch 2.14.1):
# - a matmul (mm / addmm) as 2*m*n*k; the bias add inside addmm is NOT counted (Linear with and
#   without bias both give 2*m*n*k), nor are bias gradients (a sum) or any other elementwise op;
# - a convolution as 2 * (C_in*kh*kw) * C_out * H_out*W_out per example;
# - in backward, only the gradients autograd actually computes: with an input that does not require
#   grad, a first layer computes only its weight gradient (same 2*m*n*k as forward); when the input
#   requires grad, the input gradient (another 2*m*n*k) is counted too.
def test_linear_forward_flops_match_hand_count():
    x = torch.randn(3, 8)  # batch of 3
    assert timing.flops_per_example(nn.Linear(8, 4), x, backward=False) == 2 * 8 * 4  # 64; bias add not counted
    assert timing.flops_per_example(nn.Linear(8, 4, bias=False), x, backward=False) == 64


def test_conv_forward_flops_match_hand_count():
    x = torch.randn(1, 3, 6, 6)
    # 2 * (C_in*k*k) * C_out * H*W (padding=1 keeps 6x6); bias not counted
    assert timing.flops_per_example(nn.Conv2d(3, 5, 3, padding=1), x, backward=False) == 2 * (3 * 3 * 3) * 5 * 6 * 6 == 9720
    # backward: weight gradient only (input needs no grad) = the same 9720 again
    assert timing.flops_per_example(nn.Conv2d(3, 5, 3, padding=1), x, backward=True) == 2 * 9720


def test_linear_forward_backward_flops_match_hand_count():
    lin = nn.Linear(8, 4)
    x = torch.randn(3, 8)  # requires_grad=False: backward computes grad-weight (2*8*4) and grad-bias (not counted)
    assert timing.flops_per_example(lin, x, backward=True) == 64 + 64  # 128 per example
    assert lin.weight.grad is None  # the count leaves existing .grad as it found it
    # an input that requires grad adds grad-input, another 2*8*4
    assert timing.flops_per_example(lin, torch.randn(3, 8, requires_grad=True), backward=True) == 64 * 3


def test_matmul_limit_is_positive_and_finite():
    r = timing.matmul_limit(torch.float32, n=128, seconds=0.05)
    assert r["gflops"] > 0 and math.isfinite(r["gflops"])
    assert r["threads"] == torch.get_num_threads() and r["n"] == 128


def test_int8_limit_is_a_rate_or_a_reason():
    r = timing.matmul_limit(torch.int8, n=64, seconds=0.02)
    assert (r["gflops"] is not None and r["gflops"] > 0) or r["reason"]


def test_stage_report_arithmetic():
    r = timing.stage_report("train", 100.0, 1e9, 400.0, full_protocol_images=60_000)
    assert r["gflops"] == pytest.approx(100.0)  # 100 img/s * 1 GFLOP/img
    assert r["fraction_of_limit"] == pytest.approx(0.25)
    assert r["implied_minutes"] == pytest.approx(10.0)  # 60,000 / 100 img/s = 600 s
    assert timing.stage_report("x", 100.0, 1e9, 400.0)["implied_minutes"] is None


def test_write_results_writes_json_atomically(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(timing, "RESULTS_DIR", tmp_path / "results")
    limits = {"cpu_model": "test cpu", "matmul": {"float32": {"gflops": 400.0}}}
    rows = [timing.stage_report("train", 100.0, 1e9, 400.0, 60_000)]
    path = timing.write_results("bench_test", {"rows": rows}, limits=limits)
    assert path.parent == tmp_path / "results" and path.name.startswith(f"bench_test-{timing.cpu_slug()}-")
    record = json.loads(path.read_text())
    assert record["machine"] == limits and record["rows"][0]["fraction_of_limit"] == pytest.approx(0.25)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    again = timing.write_results("bench_test", {"rows": []}, limits=limits)  # the same day: never replaces it
    assert again != path and again.name.startswith(path.stem + "-") and json.loads(path.read_text())["rows"]
    timing.print_table(rows)
    assert "fraction_of_limit" in capsys.readouterr().out
