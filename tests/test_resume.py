"""A training process killed with SIGKILL mid-run resumes from its last checkpoint, loses no
finished epoch, and ends with the same result as a run that was never interrupted."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from studylib import config, runs


def _train(env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "studylib.recipes.scratch", "custom_cnn", "--profile", "quick",
                             "--device", "cpu", *extra], env=env, cwd=config.PROJ_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.e2e
def test_sigkill_then_rerun_resumes_and_matches(real_data_dir, tmp_path):
    base = {**os.environ, config.DATA_DIR_ENV: str(real_data_dir), "OMP_NUM_THREADS": "2"}
    killed_env = {**base, config.ARTIFACTS_DIR_ENV: str(tmp_path / "killed")}
    clean_env = {**base, config.ARTIFACTS_DIR_ENV: str(tmp_path / "clean")}

    proc = _train(killed_env)
    store = tmp_path / "killed" / "quick" / "scratch"
    deadline = time.time() + 300
    while not list(store.glob("custom_cnn-*/checkpoint.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before its first checkpoint could be interrupted:\n" + proc.stdout.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = next(p for p in store.glob("custom_cnn-*") if p.is_dir())  # beside it: the run's lock file
    assert not (run_dir / "metrics.json").exists()  # unfinished: never mistaken for a finished run
    assert not [p for p in run_dir.iterdir() if p.name not in ("checkpoint.pt",)]  # no half-written files

    resumed = _train(killed_env)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "resuming" in out and "after epoch 1/2" in out

    clean = _train(clean_env)
    out_clean, _ = clean.communicate(timeout=600)
    assert clean.returncode == 0, out_clean
    clean_dir = next(p for p in (tmp_path / "clean" / "quick" / "scratch").glob("custom_cnn-*") if p.is_dir())
    assert clean_dir.name == run_dir.name  # same key: the same run
    a, b = torch.load(run_dir / "model.pt"), torch.load(clean_dir / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)  # identical weights: the resumed run lost nothing
    pa, pb = runs.load_predictions(run_dir / "predictions.npz"), runs.load_predictions(clean_dir / "predictions.npz")
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert (run_dir / "history.csv").read_text().count("\n") == 3  # header + 2 epochs, none lost or repeated

    again = _train(killed_env)  # a finished run is reused, not retrained
    out_again, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "(reused)" in out_again
