"""The study's runs as a plan, and executors that run it on this machine or on a SLURM cluster.

    plan = build_plan("quick", ["02_scratch_cnn.ipynb"], retrain=[])   # every unfinished run the report needs
    print(format_plan(plan))                                          # id, kind, notebook, command, estimate, waits for
    run_local(plan, workers=1, ...)                                   # submitit's LocalExecutor, dependencies by ordering
    submit_slurm(plan, SlurmOptions(partition="gpu", gpus=1), ...)    # job arrays with afterok dependencies
    python -m studylib.dispatch train scratch/custom_cnn-1a2b3c --notebook 02 --profile quick   # one item

The plan is learnt from the code that trains, not restated: each notebook's job enumerators (``ENUMERATORS``,
the same library calls the notebook makes) run under ``runs.recording()``, where ``ensure`` records each job
instead of training it. A probe waits for the feature caches it reads (``Job.needs``). Where a run's key is
unknown until another run finishes (the controlled grid's end-to-end cells take the learning rate their search
chooses), the plan lists the search and a pending line that waits for it; the executors plan again once it has
finished, so the cells are planned then.

Each executor job runs one plan item: ``python -m studylib.dispatch train <kind>/<id>`` re-enumerates its
notebook's jobs and computes that run alone (a pure function of its key, holding the run's lock, resuming its
checkpoint). The recipes' own commands (``Job.command``, shown in the plan) can be coarser: the heads CLI trains
every head of a profile. Job states and logs live under ``<store>/dispatch/`` (``state.json``, ``jobs/``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import artifacts, config, estimate, runs, runtime

# A notebook retrains into the store (shipped runs ignored) when --retrain names it, or names nothing.
def retraining(retrain: list[str] | None, notebook: str) -> bool:
    return retrain is not None and (not retrain or any(notebook.startswith(n) for n in retrain))


# ---------------------------------------------------------------------------------------
# Which jobs each notebook ensures (the same calls the notebooks make; studylib.recipes.experiments' sections)
# ---------------------------------------------------------------------------------------
def _ensure_each(jobs) -> None:
    for j in jobs:
        j.ensure()


def _scratch(model: str) -> Callable:
    def jobs(profile: str, kw: dict) -> None:
        from .recipes import scratch
        _ensure_each(scratch.job(model, recipe, profile, **kw) for recipe in scratch.RECIPES)
    return jobs


def _transfer(profile: str, kw: dict, weights_dir=None) -> None:
    from . import weights
    from .models import backbones
    from .recipes import heads
    for name in backbones.TRANSFER_MODELS:
        try:
            _ensure_each(heads.row_job(name, profile, recipe, weights_dir=weights_dir, **kw)
                         for recipe in ("head", "head_reference_code"))
        except weights.WeightsUnavailable:
            continue  # reported as "not run: no pretrained weights", never trained


def _strong(profile: str, kw: dict) -> None:
    from .recipes import strong
    _ensure_each(strong.job(profile, seed=s, **kw) for s in config.grid("strong", profile)["seeds"])


def _grid(profile: str, kw: dict, *, cells: bool, efficiency: bool) -> list["Pending"]:
    """The controlled grid's runs; end-to-end runs whose learning-rate search is unfinished are pending."""
    from .recipes import finetune
    g, pending = config.grid("controlled", profile), []
    # the order runs are planned in, the order an executor computes them: the searches (inside cell_jobs), the
    # probes (minutes each), the grid's end-to-end cells, the budget points up to the cells' epochs (both inits per
    # budget), the data-efficiency pairs, then the longer budget points, longest last
    budget = sorted(finetune.budget_jobs(profile, **kw).items(), key=lambda kv: (kv[0][1], kv[0][0])) if cells else []
    short = config.recipe("finetune", profile)["epochs"]
    if cells:
        grid = finetune.cell_jobs(profile, **kw)
        _ensure_each(j for (training, _), cell in grid.items() if training == "probe" for j in cell)
        _ensure_each(j for cell in finetune.block_probe_jobs(profile, **kw).values() for j in cell)
        _ensure_each(j for (training, _), cell in grid.items() if training != "probe" for j in cell)
        _ensure_each(j for (_, epochs), cell in budget if epochs <= short for j in cell)
    if efficiency:
        _ensure_each(j for cell in finetune.efficiency_jobs(profile, **kw).values() for j in cell)
    _ensure_each(j for (_, epochs), cell in budget if epochs > short for j in cell)
    # each cell's rate is searched on its own training-set size: the full-data cells' search, and one per
    # data-efficiency size
    sizes = ([None] if cells else []) + (list(g["efficiency_per_class"]) if efficiency else [])
    for init in finetune.INITS:
        for pc in sizes:
            with runs.recording() as search:
                finetune.lr_search(init, profile, per_class=pc, **kw)
            waits = [_item_id(j.run) for j in search if not j.run.done]
            if not waits:
                continue
            if pc is None:
                pending.append(Pending(f"end-to-end cells, {init} init, seeds {list(g['seeds'])}", len(g["seeds"]),
                                       waits, f"python -m studylib.recipes.finetune --profile {profile} --only finetune "
                                              f"--inits {init}"))
                budget = [(e, s) for e, n in zip(g["budget_epochs"], g["budget_seed_counts"])
                          if e != config.recipe("finetune", profile)["epochs"] for s in range(n)]
                pending.append(Pending(f"training-budget points, {init} init, epochs {sorted({e for e, _ in budget})}",
                                       len(budget), waits, f"python -m studylib.recipes.finetune --profile {profile} "
                                                           f"--only budget --inits {init}"))
            else:
                pending.append(Pending(f"end-to-end small-data points, {init} init, {pc} images per class",
                                       len(g["efficiency_seeds"]), waits,
                                       f"python -m studylib.recipes.finetune --profile {profile} --only efficiency "
                                       f"--inits {init} --per-class {pc}"))
    return pending


def _efficiency(profile: str, kw: dict) -> list["Pending"]:
    from .recipes import experiments
    experiments.seeds_table(profile, **kw)
    experiments.data_efficiency_table(profile, **kw)
    _ensure_each(experiments.efficiency_points(profile, **kw).values())
    return _grid(profile, kw, cells=False, efficiency=True)


def _resolution(profile: str, kw: dict) -> list["Pending"]:
    from .recipes import heads
    _ensure_each(job for _, jobs in heads.resolution_jobs(profile, **kw).values() for _, job in jobs)
    return _grid(profile, kw, cells=True, efficiency=False)


def _calibration(profile: str, kw: dict) -> None:
    from .recipes import experiments
    experiments.calibration_runs(profile, **kw)


def _findings(profile: str, kw: dict) -> list["Pending"]:
    pending = _grid(profile, kw, cells=True, efficiency=True)
    _strong(profile, kw)
    return pending


# Notebook number -> what it trains; 01, 05, 06 and 07 train nothing (05 and 11 measure finished runs as they render).
ENUMERATORS: dict[str, Callable[..., list | None]] = {
    "02": _scratch("custom_cnn"), "03": _transfer, "04": _scratch("vit_small"), "08": _strong, "09": _efficiency,
    "10": _resolution, "11": _calibration, "12": _findings,
}


# ---------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------
@dataclass
class Pending:
    """Runs whose keys are known only once the runs they wait for have finished (planned after them)."""
    what: str
    count: int
    waits_for: list[str]
    command: str
    notebook: str = ""


@dataclass
class Item:
    """One unfinished run of the plan and how to compute it."""
    id: str                 # "<kind>/<run id>"
    kind: str
    notebook: str           # the first notebook (in run order) that needs it: the one that trains it otherwise
    command: str            # the recipe's command (Job.command)
    exec: list[str]         # what an executor job runs: this run alone
    estimate_s: float | None
    waits_for: list[str] = field(default_factory=list)
    profile: str = ""


@dataclass
class Plan:
    profile: str
    items: list[Item]
    pending: list[Pending]
    machine: str

    def to_json(self) -> dict:
        return {"profile": self.profile, "machine": self.machine, "items": [asdict(i) for i in self.items],
                "pending": [asdict(p) for p in self.pending],
                "estimate_s": sum(i.estimate_s or 0 for i in self.items)}


def _item_id(run: runs.Run) -> str:
    return f"{run.kind}/{run.id}"


def notebook_jobs(notebook: str, profile: str, *, data_dir=None, device: str = "auto",
                  weights_dir=None) -> tuple[list[runs.Job], list[Pending]]:
    """Every job notebook ``notebook`` (its file name or number) ensures, in order, trained or not, and its pending
    lines; nothing is trained."""
    enumerate_ = ENUMERATORS.get(notebook[:2])
    if enumerate_ is None:
        return [], []
    kw = dict(data_dir=data_dir, device=device)
    with runs.recording() as jobs:
        pending = (enumerate_(profile, kw, weights_dir) if enumerate_ is _transfer else enumerate_(profile, kw)) or []
    for p in pending:
        p.notebook = notebook[:2]
    return jobs, pending


def _rates(profile: str) -> dict[str, float]:
    """This machine's images/s per kind of work (estimate.rates), timed once per machine and kept in the store."""
    from . import measure
    machine = {**measure.cpu_info(), "torch": runtime.environment()["torch"], "version": 1}
    return runs.measured(profile, "rates", "estimate", machine, lambda: estimate.rates(quick=True))


def exec_command(item_id: str, notebook: str, profile: str, *, retrain: bool, data_dir=None, device: str = "auto",
                 weights_dir=None) -> list[str]:
    """The command an executor job runs for one plan item: that run alone, with the plan's settings."""
    argv = [sys.executable, "-m", "studylib.dispatch", "train", item_id, "--notebook", notebook[:2],
            "--profile", profile, "--device", device]
    for flag, value in (("--data-dir", data_dir), ("--weights-dir", weights_dir)):
        if value:
            argv += [flag, str(value)]
    return argv + (["--retrain"] if retrain else []) + ([] if runs.waits_for_locks() else ["--no-wait"])


def build_plan(profile: str, notebooks: list[str], retrain: list[str] | None, *, data_dir=None,
               device: str = "auto", weights_dir=None, estimates: bool = True) -> Plan:
    """Every run the selected notebooks need that is not finished (in the store, or shipped when that notebook
    does not retrain), feature caches before the probes that read them, with a command and an estimate each."""
    rates = _rates(profile) if estimates else {}
    items: dict[str, Item] = {}
    pending: list[Pending] = []
    settings = dict(data_dir=data_dir, device=device, weights_dir=weights_dir)

    def add(job: runs.Job, notebook: str, rt: bool) -> Item | None:
        if job.run.done:
            return None
        iid = _item_id(job.run)
        if iid not in items:
            waits = [i.id for i in (add(need, notebook, rt) for need in job.needs) if i is not None]
            items[iid] = Item(iid, job.run.kind, notebook[:2], job.command,
                              exec_command(iid, notebook, profile, retrain=rt, **settings),
                              estimate.run_seconds(job.run, rates) if rates else None, waits, profile)
        return items[iid]

    for nb in notebooks:
        rt = retraining(retrain, nb)
        with runs.mode(use_shipped=not rt):
            jobs, nb_pending = notebook_jobs(nb, profile, **settings)
            for job in jobs:
                add(job, nb, rt)
        pending += [p for p in nb_pending if not any(p.what == q.what for q in pending)]
    env = runtime.environment()
    return Plan(profile, list(items.values()), pending, f"{env['cpu']}, {env['threads']} threads")


def _minutes(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds / 60:.1f} min"


def format_plan(plan: Plan) -> str:
    """The plan as a table: one line per run, its command under it."""
    if not plan.items and not plan.pending:
        return f"Plan ({plan.profile} profile): every run the report needs has finished; nothing to compute."
    total = sum(i.estimate_s or 0 for i in plan.items)
    lines = [f"Plan ({plan.profile} profile): {len(plan.items)} unfinished runs, about {_minutes(total)} on this "
             f"machine ({plan.machine}) one after another"]
    width = max((len(i.id) for i in plan.items), default=10)
    lines.append(f"  {'run':<{width}}  nb  {'estimate':>9}  waits for")
    for i in plan.items:
        lines.append(f"  {i.id:<{width}}  {i.notebook}  {_minutes(i.estimate_s):>9}  {', '.join(i.waits_for) or '-'}")
        lines.append(f"      {i.command}")
    for p in plan.pending:
        lines.append(f"  then (planned after {', '.join(p.waits_for)} finish): {p.count} runs, {p.what} ({p.notebook})")
        lines.append(f"      {p.command}")
    return "\n".join(lines)


def train_item(item_id: str, notebook: str, profile: str, *, retrain: bool, data_dir=None, device: str = "auto",
               weights_dir=None) -> runs.Run:
    """Compute one plan item: the job of ``notebook`` (or one of its feature caches) whose id is ``item_id``,
    holding its lock (a run another process is computing is waited for, then reused)."""
    with runs.mode(use_shipped=not retrain):
        jobs, _ = notebook_jobs(notebook, profile, data_dir=data_dir, device=device, weights_dir=weights_dir)
        for job in [n for j in jobs for n in j.needs] + jobs:
            if _item_id(job.run) == item_id:
                return job.ensure(train=True)
    raise SystemExit(f"{item_id} is not a run of notebook {notebook} under the {profile} profile: the code, data or "
                     f"settings differ from when the plan was made; plan again: python run_all.py --plan")


# ---------------------------------------------------------------------------------------
# Executors (submitit): job states and logs under <store>/dispatch/
# ---------------------------------------------------------------------------------------
def dispatch_dir() -> Path:
    return config.artifacts_dir() / "dispatch"


# Settings an executor job must see as the planning process did (SLURM exports the environment by default too).
FORWARDED_ENV = ("STUDY_ARTIFACTS", "CIFAR10_DIR", "STUDY_WEIGHTS_DIR", "STUDY_WEIGHTS_OFFLINE", runtime.ALLOCATOR_ENV)


@dataclass
class RunCommand:
    """An executor job's function (pickled by submitit): run ``argv`` in the project folder, output to the job's log."""
    argv: list[str]
    env: dict[str, str]

    def __call__(self) -> int:
        print("$", shlex.join(self.argv), flush=True)
        subprocess.run(self.argv, cwd=config.PROJ_ROOT, env={**os.environ, **self.env}, check=True)
        return 0


def _command_fn(item: Item) -> RunCommand:
    env = {**runtime.allocator_env(), **{k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}
    env["STUDY_ARTIFACTS"] = str(config.artifacts_dir())
    return RunCommand(item.exec, env)


def _record_state(jobs: dict[str, Any], items: dict[str, Item], executor: str) -> None:
    """``<store>/dispatch/state.json``: each submitted item's job id, state and log files (merged over submissions)."""
    path = dispatch_dir() / "state.json"
    state = artifacts.read_json(path) if path.exists() else {}
    for iid, job in jobs.items():
        state[iid] = {"executor": executor, "job_id": job.job_id, "state": job.state, "command": shlex.join(items[iid].exec),
                      "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr), "updated": time.strftime("%F %T")}
    artifacts.write_json(path, state)


def log_tail(job, lines: int = 15) -> str:
    text = ""
    for p in (job.paths.stdout, job.paths.stderr):
        with contextlib.suppress(OSError):
            text += Path(p).read_text(errors="replace")
    return "\n".join("      " + line for line in text.strip().splitlines()[-lines:])


def _finished(job) -> bool:
    return job.state in ("COMPLETED", "FINISHED") or (job.done() and job.exception() is None)


def run_local(plan: Plan, *, workers: int = 1, replan: Callable[[], Plan] | None = None, poll_s: float = 1.0) -> list[str]:
    """Run the plan on this machine in ``workers`` processes (submitit's LocalExecutor): an item starts once what
    it waits for has finished. With ``replan``, the plan is made again as soon as a run that a pending line waits
    for has finished (a search's round: its next rate, or the runs at its choice, take their planned place in the
    queue instead of waiting for everything queued) and when everything queued has run. Prints a line per finished job; returns the ids that failed (with their
    log tails)."""
    import submitit

    executor = submitit.LocalExecutor(folder=dispatch_dir() / "jobs")
    executor.update_parameters(timeout_min=7 * 24 * 60)  # no time limit here: a run resumes from its checkpoint anyway
    failed: list[str] = []
    submitted: set[str] = set()
    todo = list(plan.items)
    items = {i.id: i for i in plan.items}
    running: dict[str, Any] = {}
    done_ok: set[str] = set()
    t0 = time.perf_counter()

    def merge(new: Plan) -> None:
        """The new plan replaces the queue, in its order (a run it no longer lists is dropped: finished elsewhere,
        or no longer wanted; a run it unlocked takes its planned place, e.g. a search's next rate before the rest)."""
        nonlocal plan, todo
        fresh = [i for i in new.items if i.id not in submitted and i.id not in items]
        items.update({i.id: i for i in new.items})
        todo = [i for i in new.items if i.id not in submitted]
        plan = new
        if fresh:
            print(f"planned again: {len(fresh)} new run(s): {', '.join(i.id for i in fresh)}", flush=True)

    while True:
        while todo or running:
            for item in list(todo):
                blocked = [w for w in item.waits_for if w in items and w not in done_ok]
                if any(w in failed for w in blocked):
                    todo.remove(item)
                    failed.append(item.id)
                    print(f"skipped {item.id}: {', '.join(w for w in blocked if w in failed)} failed", flush=True)
                elif not blocked and len(running) < workers:
                    todo.remove(item)
                    submitted.add(item.id)
                    running[item.id] = executor.submit(_command_fn(item))
                    _record_state({item.id: running[item.id]}, {item.id: item}, "local")
            for iid, job in list(running.items()):
                if job.done():
                    del running[iid]
                    ok = _finished(job)
                    (done_ok.add if ok else failed.append)(iid)
                    _record_state({iid: job}, items, "local")
                    print(f"[{len(done_ok) + len(failed)}/{len(submitted) + len(todo)}] {iid}: "
                          f"{'finished' if ok else 'FAILED'} ({(time.perf_counter() - t0) / 60:.1f} min since start)",
                          flush=True)
                    if not ok:
                        print(log_tail(job), flush=True)
                    elif replan is not None and any(iid in p.waits_for for p in plan.pending):
                        merge(replan())
            time.sleep(poll_s if running else 0)
        if replan is None:
            break
        merge(replan())
        if not todo:
            break
    return failed


@dataclass
class SlurmOptions:
    """Per-job resources of the SLURM submission (mapped onto submitit's SlurmExecutor parameters)."""
    partition: str | None = None
    gpus: int = 0                # per job; 0: CPU only
    cpus: int = 8                # per job (torch threads follow the allocation)
    mem_gb: int = 16
    time_margin: float = 2.0     # time limit = estimate on this machine x margin + 10 min
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None

    def parameters(self, max_estimate_s: float | None) -> dict:
        minutes = 60 if max_estimate_s is None else int(max_estimate_s * self.time_margin / 60) + 10
        p = {"time": minutes, "cpus_per_task": self.cpus, "mem": f"{self.mem_gb}GB", "job_name": "study",
             "array_parallelism": self.array_parallelism, "partition": self.partition, "account": self.account,
             "qos": self.qos, "constraint": self.constraint}
        if self.gpus:
            p["gpus_per_node"] = self.gpus
        return {k: v for k, v in p.items() if v is not None}


def waves(plan: Plan) -> list[list[Item]]:
    """The plan's items by dependency depth: wave 0 waits for nothing, wave k for items of earlier waves only."""
    depth: dict[str, int] = {}
    by_id = {i.id: i for i in plan.items}
    for item in plan.items:  # producers come before their dependents in a plan
        depth[item.id] = 1 + max((depth[w] for w in item.waits_for if w in by_id), default=-1)
    out = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for item in plan.items:
        out[depth[item.id]].append(item)
    return out


@dataclass
class Submission:
    """One sbatch submission: a job array of plan items (or the continuation that plans again)."""
    name: str
    items: list[Item]
    parameters: dict
    after: list[int]            # indices of earlier submissions this one waits for (afterok)
    commands: list[list[str]]


def slurm_submissions(plan: Plan, opts: SlurmOptions, continuation: list[str] | None = None) -> list[Submission]:
    """The plan as SLURM submissions: one job array per wave, each waiting (afterok) for the arrays holding what
    its items wait for; with pending runs, a continuation job that plans and submits again after all of them."""
    subs: list[Submission] = []
    where: dict[str, int] = {}
    for k, wave in enumerate(waves(plan)):
        after = sorted({where[w] for i in wave for w in i.waits_for if w in where})
        est = [i.estimate_s for i in wave if i.estimate_s is not None]
        subs.append(Submission(f"wave {k}", wave, opts.parameters(max(est) if est else None), after,
                               [i.exec for i in wave]))
        where.update({i.id: len(subs) - 1 for i in wave})
    if plan.pending and continuation:
        params = {**SlurmOptions(partition=opts.partition, cpus=2, mem_gb=8, account=opts.account, qos=opts.qos)
                  .parameters(None), "time": 30, "job_name": "study-plan"}
        subs.append(Submission("plan again", [], params, list(range(len(subs))), [continuation]))
    return subs


def _executor(folder: Path, render_only: bool = False):
    import submitit

    cls = submitit.SlurmExecutor
    if render_only:  # SlurmExecutor refuses to start without srun; rendering the sbatch text needs no cluster
        cls = type("RenderOnlySlurmExecutor", (submitit.SlurmExecutor,), {"affinity": classmethod(lambda c: 1)})
    return cls(folder=folder)


def render_sbatch(sub: Submission, dependency_ids: list[str] | None = None, folder: Path | None = None) -> str:
    """The sbatch script submitit writes for ``sub`` (without submitting it): array size, resources, dependency."""
    ex = _executor(folder or dispatch_dir() / "jobs", render_only=True)
    ex.update_parameters(**_with_dependency(sub.parameters, dependency_ids or [f"<{a}>" for a in sub.after]))
    if len(sub.commands) > 1:
        ex.parameters["map_count"] = len(sub.commands)
    return ex._make_submission_file_text(ex._submitit_command_str, "render")


def _with_dependency(parameters: dict, ids: list[str]) -> dict:
    return {**parameters, "dependency": "afterok:" + ":".join(ids)} if ids else dict(parameters)


def submit_slurm(plan: Plan, opts: SlurmOptions, continuation: list[str] | None = None) -> dict[str, Any]:
    """Submit the plan to SLURM through submitit; returns {item id: submitit Job}. Each array's job id is taken
    for the afterok dependency of the arrays after it."""
    subs = slurm_submissions(plan, opts, continuation)
    array_ids: list[str] = []
    jobs: dict[str, Any] = {}
    items = {i.id: i for i in plan.items}
    for sub in subs:
        ex = _executor(dispatch_dir() / "jobs")
        ex.update_parameters(**_with_dependency(sub.parameters, [array_ids[a] for a in sub.after]))
        fns = [_command_fn(i) for i in sub.items] or [RunCommand(sub.commands[0], {})]
        with ex.batch():
            submitted = [ex.submit(fn) for fn in fns]
        array_ids.append(submitted[0].job_id.split("_")[0])
        jobs.update({i.id: j for i, j in zip(sub.items, submitted)})
        print(f"submitted {sub.name}: SLURM job {array_ids[-1]} ({len(fns)} task(s), "
              f"{sub.parameters['time']} min limit each"
              + (f", after {', '.join(array_ids[a] for a in sub.after)})" if sub.after else ")"), flush=True)
    _record_state(jobs, items, "slurm")
    return jobs


def follow(jobs: dict[str, Any], poll_s: float = 30.0) -> list[str]:
    """Wait for submitted jobs, printing a line as each finishes; returns the failed ids (log tails printed)."""
    left, failed, t0 = dict(jobs), [], time.perf_counter()
    while left:
        for iid, job in list(left.items()):
            if job.done():
                del left[iid]
                ok = _finished(job)
                if not ok:
                    failed.append(iid)
                print(f"[{len(jobs) - len(left)}/{len(jobs)}] {iid}: {'finished' if ok else 'FAILED (' + job.state + ')'} "
                      f"({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
                if not ok:
                    print(log_tail(job), flush=True)
        time.sleep(poll_s if left else 0)
    return failed


def main(argv: list[str] | None = None) -> None:
    """``train``: compute one plan item (what an executor job runs)."""
    ap = runs.command_parser(main.__doc__, argv)
    ap.add_argument("action", choices=("train",))
    ap.add_argument("item", help="<kind>/<run id>, as the plan lists it")
    ap.add_argument("--notebook", required=True, help="the notebook number whose jobs hold it, e.g. 02")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--weights-dir", default=None)
    args = runs.parse_command(ap, argv)
    t0 = time.perf_counter()
    run = train_item(args.item, args.notebook, args.profile, retrain=args.retrain, data_dir=args.data_dir,
                     device=args.device, weights_dir=args.weights_dir)
    print(f"{args.item}: finished in {time.perf_counter() - t0:.0f} s -> {config.display_path(run.source)}", flush=True)


if __name__ == "__main__":
    main()
