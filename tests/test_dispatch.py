"""The plan, the executors and one owner per run (studylib.dispatch, runs.Run.owned), on the quick profile.

Fast tier: the lock between processes on a toy run (seconds), and the SLURM submission rendered without a
cluster. e2e: the plan against what a retrain writes, the local executor with two workers, and a worker killed
with SIGKILL whose lock the next worker recovers (each trains quick Custom CNN runs: tens of seconds)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from studylib import artifacts, config, dispatch, runs

# A toy run computed by a separate process: fit logs who computed it, then finishes after `sleep` seconds; with a
# checkpoint file it resumes where the killed owner stopped (the engine's runs do the same with checkpoint.pt).
TOY = textwrap.dedent("""
    import os, sys, time
    from studylib import artifacts, runs
    sleep = float(sys.argv[1])
    runs.set_mode(wait=sys.argv[2:] != ["--no-wait"])
    run = runs.Run("toy", "race", {"k": 1}, "quick")

    def fit(run):
        ckpt = run.folder / "checkpoint.json"
        start = artifacts.read_json(ckpt)["step"] if ckpt.exists() else 0
        with open(run.folder.parent / "fits.log", "a") as f:
            f.write(f"{os.getpid()} from {start}\\n")
        hold = os.environ.get("TOY_HOLD")  # a file the test creates when this owner may finish
        for step in range(start, 4):
            time.sleep(sleep / 4)
            artifacts.write_json(ckpt, {"step": step + 1})
            while hold and not os.path.exists(hold):
                time.sleep(0.05)
        run.finish({"value": 42, "by": os.getpid()})

    before = run.done
    got = runs.ensure(run, fit, "toy")
    print("reused" if before or (got.done and got.metrics["by"] != os.getpid()) else
          "trained" if got.done else "not done", flush=True)
""")


def _toy(store, sleep: float, *flags: str, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TOY, str(sleep), *flags], cwd=config.PROJ_ROOT, text=True,
                            env={**os.environ, config.ARTIFACTS_DIR_ENV: str(store), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(path_glob, store, proc, timeout=60):
    deadline = time.time() + timeout
    while not list(store.glob(path_glob)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the first process ended before the test could race it:\n" + proc.stdout.read()


def test_two_processes_on_one_key_one_trains_the_other_waits_and_reuses(artifact_root, tmp_path):
    hold = tmp_path / "release"  # the first owner computes until the test releases it: no race on a slow machine
    first = _toy(artifact_root, 0.4, TOY_HOLD=str(hold))
    _wait_for("quick/toy/*/checkpoint.json", artifact_root, first)  # the first owns the lock and is computing
    second = _toy(artifact_root, 3.0)
    skipper = _toy(artifact_root, 3.0, "--no-wait")                  # --no-wait: skipped, and says so
    skipped = skipper.communicate(timeout=120)[0]
    hold.touch()
    out = [p.communicate(timeout=120)[0] for p in (first, second)] + [skipped]
    assert [p.returncode for p in (first, second, skipper)] == [0, 0, 0], out
    assert out[0].strip().endswith("trained") and out[1].strip().endswith("reused"), out
    assert "skipped: toy/race-" in out[2] and "is being computed by host" in out[2] and "not done" in out[2], out[2]
    fits = (artifact_root / "quick" / "toy" / "fits.log").read_text().splitlines()
    assert len(fits) == 1 and fits[0] == f"{first.pid} from 0"  # computed once, by the first process
    run = runs.Run("toy", "race", {"k": 1}, "quick")
    assert run.metrics["by"] == first.pid and not run.lock_path.exists()


def test_sigkilled_owner_leaves_a_lock_that_the_next_worker_recovers(artifact_root):
    first = _toy(artifact_root, 20.0)
    _wait_for("quick/toy/*/checkpoint.json", artifact_root, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    run = runs.Run("toy", "race", {"k": 1}, "quick")
    assert run.lock_path.exists() and f"pid={first.pid}" in run.lock_path.read_text()  # not released by the kill
    step = artifacts.read_json(run.folder / "checkpoint.json")["step"]
    t0 = time.time()
    second = _toy(artifact_root, 0.4)
    out = second.communicate(timeout=60)[0]
    assert second.returncode == 0 and out.strip().endswith("trained"), out
    assert time.time() - t0 < 30  # broken at once (its pid is dead on this host), not after the lease expires
    fits = (run.folder.parent / "fits.log").read_text().splitlines()
    assert fits == [f"{first.pid} from 0", f"{second.pid} from {step}"] and step >= 1  # resumed, not restarted
    assert run.metrics["by"] == second.pid


def test_slurm_submission_renders_arrays_resources_and_dependencies(artifact_root, real_data_dir, monkeypatch,
                                                                     tmp_path):
    """Notebook 10 (quick): feature caches and learning-rate searches in the first array, the probes after them
    (afterok), and a job that plans again after both (the end-to-end cells wait for the searches' choice)."""
    monkeypatch.setenv(config.DATA_DIR_ENV, str(real_data_dir))
    monkeypatch.setenv("STUDY_WEIGHTS_OFFLINE", "1")
    rates = dict.fromkeys(("custom_cnn", "vit_small", "strong", "finetune", "head"), 1000.0)
    monkeypatch.setattr(dispatch, "_rates", lambda profile: {**rates, "extract224": 50.0, "extract224_fp32": 25.0})
    plan = dispatch.build_plan("quick", ["10_resolution.ipynb"], retrain=[])
    assert plan.items and plan.pending
    opts = dispatch.SlurmOptions(partition="gpu", gpus=1, cpus=6, mem_gb=24, time_margin=3.0)
    subs = dispatch.slurm_submissions(plan, opts, continuation=["python", "run_all.py", "--executor", "slurm"])
    waves = dispatch.waves(plan)
    assert len(waves) == 2 and len(subs) == 3
    assert [len(s.commands) for s in subs[:2]] == [len(w) for w in waves]
    assert sorted(i.id for s in subs[:2] for i in s.items) == sorted(i.id for i in plan.items)  # every item, once
    assert {i.kind for i in waves[0]} == {"features", "finetune"} and {i.kind for i in waves[1]} == {"lbfgs_probe", "head"}
    for sub in subs[:2]:
        assert [c[c.index("train") + 1] for c in sub.commands] == [i.id for i in sub.items]
    text = [dispatch.render_sbatch(s, [str(100 + k) for k in s.after], folder=tmp_path / "jobs") for s in subs]
    for k, (sub, sbatch) in enumerate(zip(subs[:2], text)):
        longest = max(i.estimate_s for i in sub.items)
        assert f"#SBATCH --array=0-{len(sub.items) - 1}%{len(sub.items)}" in sbatch
        assert f"#SBATCH --time={int(longest * 3.0 / 60) + 10}" in sbatch
        for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=6",
                     "#SBATCH --mem=24GB"):
            assert line in sbatch, sbatch
        assert ("#SBATCH --dependency" in sbatch) == (k > 0)
    assert "#SBATCH --dependency=afterok:100\n" in text[1]
    assert "#SBATCH --dependency=afterok:100:101\n" in text[2] and "--array" not in text[2]


def _finished(store) -> dict[str, dict]:
    return {f"{m.parent.parent.name}/{m.parent.name}": artifacts.read_json(m)
            for m in (store / "quick").glob("*/*/metrics.json")}


@pytest.mark.e2e
def test_plan_equals_retrain_and_two_local_workers_equal_sequential_training(real_data_dir, tmp_path):
    """Restricted to notebook 02 (two quick Custom CNN runs) so the test stays short; the other notebooks'
    enumerators take the same path (the SLURM test plans notebook 10). On an empty store the plan lists exactly the
    runs ``--retrain 02`` writes; the local executor trains the plan in two submitit worker processes, and their
    metrics equal those of the retrain, which trains the same runs one after another in the notebook (one thread
    per process in both, so the arithmetic is the same)."""
    env = {**os.environ, config.DATA_DIR_ENV: str(real_data_dir), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "run_all.py", "--profile", "quick", "--retrain", "02", "--only", "02"]

    def run_all(store, *extra):
        return subprocess.run(args + list(extra), cwd=config.PROJ_ROOT, env={**env, config.ARTIFACTS_DIR_ENV: str(store)},
                              capture_output=True, text=True, check=True).stdout

    sequential, parallel = tmp_path / "sequential", tmp_path / "parallel"
    plan = json.loads(run_all(sequential, "--plan", "--json"))
    ids = sorted(i["id"] for i in plan["items"])
    assert len(ids) == 2 and all(i["command"].startswith("python -m studylib.recipes.scratch custom_cnn")
                                 and i["estimate_s"] > 0 and not i["waits_for"] for i in plan["items"])
    run_all(sequential, "--reports-dir", str(tmp_path / "reports"))
    assert sorted(_finished(sequential)) == ids
    assert "nothing to compute" in run_all(sequential, "--plan")

    out = run_all(parallel, "--executor", "local", "--workers", "2")
    assert out.count(": finished (") == 2, out
    state = json.loads((parallel / "dispatch" / "state.json").read_text())
    assert sorted(state) == ids and {s["state"] for s in state.values()} <= {"FINISHED", "COMPLETED"}
    assert len({s["job_id"] for s in state.values()}) == 2  # two worker processes
    a, b = _finished(parallel), _finished(sequential)
    assert sorted(a) == ids
    for i in ids:
        assert (a[i]["test_acc"], a[i]["steps"], a[i]["key"]) == (b[i]["test_acc"], b[i]["steps"], b[i]["key"])
        history = [[r.rsplit(",", 1)[0] for r in (store / "quick" / i / "history.csv").read_text().splitlines()]
                   for store in (parallel, sequential)]  # every column but the epoch's seconds
        assert len(history[0]) == 3 and history[0] == history[1]


@pytest.mark.e2e
def test_sigkilled_worker_run_resumes_from_its_checkpoint(real_data_dir, artifact_root, monkeypatch):
    """A real plan item (a quick Custom CNN run) killed after its first epoch's checkpoint: its lock stays, the next
    worker breaks it and the engine resumes after epoch 1."""
    monkeypatch.setenv(config.DATA_DIR_ENV, str(real_data_dir))
    item = dispatch.build_plan("quick", ["02_scratch_cnn.ipynb"], retrain=[], estimates=False).items[0]
    env = {**os.environ}
    proc = subprocess.Popen(item.exec, cwd=config.PROJ_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for(f"quick/{item.id}/checkpoint.pt", artifact_root, proc, timeout=300)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lock = artifact_root / "quick" / f"{item.id}.lock"
    assert lock.exists() and f"pid={proc.pid}" in lock.read_text()
    out = subprocess.run(item.exec, cwd=config.PROJ_ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert "resuming" in out and "after epoch 1/" in out, out
    assert (artifact_root / "quick" / item.id / "metrics.json").exists() and not lock.exists()


@pytest.mark.e2e  # four submitit jobs: each starts a Python process of its own
def test_local_executor_plans_again_when_a_search_round_finishes_and_runs_what_it_unlocked_first(artifact_root,
                                                                                                tmp_path):
    """A search's next rates (or the runs at its choice) must not wait for every other queued run: once a run that a
    pending line waits for finishes, the plan is made again and the queue follows its order. Runs the new plan no
    longer lists are dropped (never trained at a provisional choice)."""
    log = tmp_path / "order.log"

    def item(name, waits=()):
        argv = [sys.executable, "-c", f"open({str(log)!r}, 'a').write({name!r} + '\\n')"]
        return dispatch.Item(f"toy/{name}", "toy", "12", name, argv, 1.0, list(waits), "quick")

    search, probe_a, probe_b, stale = item("search"), item("probe_a"), item("probe_b"), item("stale")
    first = dispatch.Plan("quick", [search, probe_a, stale, probe_b],
                          [dispatch.Pending("cells", 1, ["toy/search"], "cmd")], "toy")
    calls = []

    def replan():
        calls.append(log.read_text().split())
        done = set(calls[-1])
        left = [i for i in (probe_a, probe_b) if i.command not in done]
        return dispatch.Plan("quick", [item("cell")] + left if "cell" not in done else left, [], "toy")

    assert dispatch.run_local(first, replan=replan, poll_s=0.05) == []
    order = log.read_text().split()
    assert order == ["search", "cell", "probe_a", "probe_b"], order  # "stale" left the plan: never run
    assert calls[0] == ["search"]
