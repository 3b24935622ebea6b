"""Runs: the one lifecycle of everything expensive the study computes.

    run = Run("scratch", "custom_cnn", key, profile="full")   # key -> <store>/full/scratch/custom_cnn-<hash>/
    run.ensure(lambda r: train(r))                            # finished: reused; unfinished: resumed; force: redone
    run.metrics["test_acc"], run.history(), run.predictions()
    table("full", "scratch", recipe="reference_code")         # every finished run matching, as a DataFrame
    ensure(run, fit, command)                                 # the same, when this process's mode trains; else say how

A run is a folder named by a hash of everything that produced it (its ``key``). While it works it
may hold a checkpoint; it is finished when its marker file (``metrics.json``) exists, which is
written last, atomically. Finished runs are found in two places, in order:

1. the artifact store (``$STUDY_ARTIFACTS``, default ``<project>/artifacts``): what this machine ran;
2. the shipped runs (``<project>/runs``, committed): the small outputs of the study's full-profile
   runs (metrics, history, per-example predictions; weights of the deployed models), each file's
   sha256 in ``runs/MANIFEST.json``. ``Mode(use_shipped=False)`` (``run_all.py --retrain``) ignores them.

New runs are always written to the store; shipped runs are written only by ``studylib.ship``.

What a process may do with runs is its **mode** (``Mode``: read the shipped runs or not, train a missing run or
only name its command, wait for a run another process holds or skip it), set explicitly where the process
starts: notebooks from their declared parameters (``studylib.nb.setup``, which ``run_all.py`` fills), the command
lines from their flags (``runs.command_parser``). Nothing reads it from the environment.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from . import artifacts, config, runtime

MARKER = "metrics.json"
# Bump when a change to the engine, the augmentation or a model changes results: it is part of every training run's
# key (studylib.recipes), so old runs are not reused for new code; deploy finds runs of this version.
ENGINE_VERSION = 2
# One owner per run: a lease beside the run folder (``<folder>.lock``), taken while the run is computed.
# filelock's SoftFileLease, because the store may sit on NFS shared by a cluster's nodes: it is an O_EXCL marker
# file (atomic on NFSv3+), where flock/fcntl locks are emulated or unsupported on many NFS mounts. A marker is not
# released by the kernel when its holder dies, so it records host, pid and process start time, and a heartbeat
# thread refreshes it every LOCK_LEASE_S / 3: a marker whose pid is dead on this host is broken at once (kill -9),
# one from another host once its heartbeat is older than LOCK_LEASE_S (a node lost mid-run).
LOCK_LEASE_S = 300.0
LOCK_POLL_S = 1.0
WEIGHTS_FILE = "model.pt"


@dataclass(frozen=True)
class Mode:
    """What this process may do with runs. ``use_shipped``: shipped runs count as finished (False: retraining
    into the store ignores them); ``train``: ``ensure`` computes a missing run (False: it prints the command that
    would, and the caller shows the run as not run); ``wait``: a run another process holds is waited for, then
    reused (False: skipped, and said so)."""
    use_shipped: bool = True
    train: bool = True
    wait: bool = True


# The modes a notebook or run_all.py names (its ``mode`` parameter): (use_shipped, train)
MODES = {
    "train": (True, True),      # shipped runs count; a missing run is trained here (a notebook opened by hand)
    "shipped": (True, False),   # shipped runs count; a missing run prints its command (run_all.py, full profile)
    "retrain": (False, True),   # shipped runs ignored; everything is trained into the store (run_all.py --retrain)
    "store": (False, False),    # only the store counts, nothing is trained (rendering what an executor retrained)
}


def named_mode(name: str, wait: bool = True) -> Mode:
    if name not in MODES:
        raise ValueError(f"mode {name!r}: use one of {', '.join(MODES)}")
    use_shipped, train = MODES[name]
    return Mode(use_shipped=use_shipped, train=train, wait=wait)


_mode = Mode()


def current_mode() -> Mode:
    return _mode


def set_mode(**changes: bool) -> Mode:
    """Change this process's mode (fields of ``Mode``); returns the mode it replaced."""
    global _mode
    old, _mode = _mode, replace(_mode, **changes)
    return old


@contextlib.contextmanager
def mode(**changes: bool) -> Iterator[Mode]:
    """``set_mode`` for the duration of a block."""
    old = set_mode(**changes)
    try:
        yield _mode
    finally:
        set_mode(**asdict(old))


def command_parser(description: str, argv: list[str] | None):
    """The start of every command that computes runs (the recipes' and the dispatcher's): started as a command
    (``argv`` None), it restarts itself with the allocator setting (``runtime.restart_with_allocator``); its parser
    has ``--profile``, ``--device`` and the mode's flags, which ``parse_command`` applies."""
    import argparse

    if argv is None:
        runtime.restart_with_allocator()
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--profile", choices=sorted(config.PROFILES), default="full")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--retrain", action="store_true",
                    help="shipped runs (runs/) do not count as finished: train into the artifact store")
    ap.add_argument("--no-wait", action="store_true",
                    help="a run another process is computing is skipped (and said so) instead of waited for")
    return ap


def parse_command(ap, argv: list[str] | None):
    """``ap``'s arguments, with this process's mode set from them."""
    args = ap.parse_args(argv)
    set_mode(use_shipped=not args.retrain, wait=not args.no_wait)
    return args


def use_shipped() -> bool:
    return _mode.use_shipped


def training_allowed() -> bool:
    return _mode.train


def shipped_root() -> Path:
    return config.SHIPPED_RUNS_DIR


class Run:
    """One expensive computation: ``kind`` (scratch, head, features, ...), ``name`` (usually the model)
    and ``key`` (everything that determines its result; the device does not)."""

    def __init__(self, kind: str, name: str, key: Any, profile: str, marker: str = MARKER):
        self.kind, self.name, self.key, self.profile, self.marker = kind, name, key, profile, marker
        self.id = f"{name}-{artifacts.hash_obj(key)}"
        self.folder = config.artifacts_dir() / profile / kind / self.id
        self._metrics: dict | None = None

    def __repr__(self) -> str:
        return f"Run({self.kind}/{self.id}, {'done' if self.done else 'not done'})"

    # --- where it is ------------------------------------------------------------------
    @property
    def shipped_folder(self) -> Path:
        return shipped_root() / self.profile / self.kind / self.id

    @property
    def source(self) -> Path | None:
        """The folder holding the finished run (store first, then shipped), or None."""
        if (self.folder / self.marker).exists():
            return self.folder
        if use_shipped() and self.has_shipped_copy:
            return self.shipped_folder
        return None

    @property
    def has_shipped_copy(self) -> bool:
        """Whether ``runs/`` holds this run finished (also when the store holds it too and is read first)."""
        return (self.shipped_folder / self.marker).exists()

    @property
    def done(self) -> bool:
        return self.source is not None

    @property
    def shipped(self) -> bool:
        return self.source == self.shipped_folder

    def path(self, name: str) -> Path:
        """A file of the finished run (or of the folder being written, while unfinished)."""
        return (self.source or self.folder) / name

    # --- lifecycle --------------------------------------------------------------------
    def reset(self) -> None:
        """Forget this run in the store (checkpoint included): the next ``ensure`` computes it
        afresh. Shipped runs are never touched."""
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self._metrics = None

    @property
    def lock_path(self) -> Path:
        """The lease file of this run's owner (beside the folder, so ``reset`` never deletes a held lock)."""
        return self.folder.with_name(self.folder.name + ".lock")

    @contextlib.contextmanager
    def owned(self, wait: bool = True) -> Iterator["Run"]:
        """Hold this run's lock (see ``LOCK_LEASE_S``): waits while another process computes it, breaking a lock
        whose holder died; ``wait=False`` raises ``RunBusy`` instead. Re-entrant within a process."""
        from filelock import SoftFileLease, Timeout

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        # is_singleton: the same lock object per path in this process, so nested holds (a head's fit extracting
        # the features it needs) count up instead of waiting on themselves
        lock = SoftFileLease(self.lock_path, lease_duration=LOCK_LEASE_S, is_singleton=True, poll_interval=LOCK_POLL_S)
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            raise RunBusy(self, lock_holder(self.lock_path)) from None
        try:
            yield self
        finally:
            lock.release()

    def ensure(self, fit: Callable[["Run"], Any], force: bool = False, wait: bool = True) -> "Run":
        """The finished run, or ``fit(self)`` to compute it (``force``: recompute in the store), holding the
        run's lock: a second process reaching the same run waits, then reuses what the first one wrote
        (``wait=False``: raises ``RunBusy`` instead)."""
        if self.done and not force:
            return self
        with self.owned(wait):
            if force:
                self.reset()
                if not (self.folder / self.marker).exists() and self.shipped:
                    raise RuntimeError(f"{self.id}: force=True cannot recompute a shipped run in place; "
                                       "retrain into the store instead (run_all.py --retrain, a recipe's --retrain).")
            if not self.done:  # the owner before us may have finished it while we waited
                fit(self)
                if not self.done:
                    raise RuntimeError(f"{self.kind}/{self.id}: fit returned without writing {self.marker}")
        return self

    def finish(self, metrics: dict, *, history: pd.DataFrame | None = None, predictions: dict | None = None,
               files: dict[str, Any] | None = None) -> dict:
        """Write the run's outputs, ``metrics.json`` last (the marker): ``files`` are torch-saved
        objects by file name (e.g. ``model.pt``), ``predictions`` per-example arrays."""
        for name, obj in (files or {}).items():
            artifacts.torch_save(self.folder / name, obj)
        if history is not None:
            artifacts.write_bytes(self.folder / "history.csv", history.to_csv(index=False).encode())
        if predictions is not None:
            save_predictions(self.folder / "predictions.npz", **predictions)
        record = {"kind": self.kind, "name": self.name, "profile": self.profile, "id": self.id, "key": self.key,
                  "environment": runtime.environment(), **metrics}
        artifacts.write_json(self.folder / self.marker, record)
        (self.folder / "checkpoint.pt").unlink(missing_ok=True)
        self._metrics = None
        return self.metrics

    def write_marker(self, content: Any) -> Path:
        """Finish a run whose marker is its one result file (a feature cache, a robustness table, a measurement):
        ``content`` written atomically as the marker (bytes as they are, a dict as JSON, anything else
        torch-saved). Runs with metrics finish with ``finish``, whose marker is ``metrics.json``."""
        path = self.folder / self.marker
        if isinstance(content, bytes):
            artifacts.write_bytes(path, content)
        elif isinstance(content, dict) and self.marker.endswith(".json"):
            artifacts.write_json(path, content)
        else:
            artifacts.torch_save(path, content)
        self._metrics = None
        return path

    # --- what it holds ----------------------------------------------------------------
    @property
    def metrics(self) -> dict:
        if self._metrics is None:
            if not self.done:
                raise FileNotFoundError(f"{self.kind}/{self.id} has not finished (no {self.marker} in "
                                        f"{config.display_path(self.folder)} or the shipped runs)")
            self._metrics = artifacts.read_json(self.path(self.marker))
        return self._metrics

    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.path("history.csv"))

    def predictions(self) -> dict[str, np.ndarray]:
        return load_predictions(self.path("predictions.npz"))

    def load(self, name: str = WEIGHTS_FILE) -> Any:
        """A torch-saved file of the finished run (e.g. its state dict)."""
        path = self.path(name)
        if not path.exists():
            raise FileNotFoundError(f"{self.kind}/{self.id} has no {name} (shipped runs carry weights only for "
                                    f"deployed models); retrain it: python run_all.py --retrain")
        return torch.load(path, map_location="cpu", weights_only=True)


class RunBusy(RuntimeError):
    """Another live process holds the run's lock (raised instead of waiting when asked not to wait)."""

    def __init__(self, run: Run, holder: str):
        super().__init__(f"{run.kind}/{run.id} is being computed by {holder}; wait for it (drop --no-wait) "
                         f"or run again later: a finished run is reused")
        self.run, self.holder = run, holder


def lock_holder(path: Path) -> str:
    """Who holds a run's lock, from its lease record ("host vm, pid 123"), for messages."""
    try:
        fields = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    except OSError:
        return "another process"
    return f"host {fields.get('host', '?')}, pid {fields.get('pid', '?')}"


def waits_for_locks() -> bool:
    return _mode.wait


# ---------------------------------------------------------------------------------------
# Per-example predictions: what paired tests and reviewers need, a few tens of KB per run
# ---------------------------------------------------------------------------------------
def predictions_from_logits(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None) -> dict:
    """Per test image: true class, predicted class, probability of the true class and of the prediction."""
    prob = torch.softmax(logits.float(), 1)
    pred = prob.argmax(1)
    idx = torch.arange(len(labels)) if index is None else torch.as_tensor(index)
    return {"index": idx.numpy().astype(np.int32), "y": labels.numpy().astype(np.uint8),
            "pred": pred.numpy().astype(np.uint8),
            "p_true": prob.gather(1, labels[:, None]).squeeze(1).numpy().astype(np.float16),
            "p_pred": prob.max(1).values.numpy().astype(np.float16)}


def save_predictions(path: Path, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return artifacts.write_bytes(path, buf.getvalue())


def load_predictions(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------------------------------
# Finding finished runs
# ---------------------------------------------------------------------------------------
def _roots(profile: str, kind: str) -> list[tuple[str, Path]]:
    roots = [("store", config.artifacts_dir() / profile / kind)]
    if use_shipped():
        roots.append(("shipped", shipped_root() / profile / kind))
    return roots


def table(profile: str, kind: str, name: str | None = None, **filters: Any) -> pd.DataFrame:
    """Every finished run of ``kind`` (and ``name``) under ``profile`` whose key matches ``filters``
    (dotted key paths allowed: ``recipe="reference_code"``, ``**{"data.per_class": 100}``), one row each:
    its key flattened, its metrics' scalars, ``source`` (store or shipped) and ``run`` (the Run).
    A run in both places is listed once, from the store."""
    rows, seen = [], set()
    for source, root in _roots(profile, kind):
        for marker in sorted(root.glob(f"{name + '-' if name else ''}*/{MARKER}")):
            run_id = marker.parent.name
            if run_id in seen:
                continue
            m = artifacts.read_json(marker)
            flat_key = config.flatten(m.get("key", {}))
            if any(flat_key.get(k, m.get(k)) != _jsonable(v) for k, v in filters.items()):
                continue
            seen.add(run_id)
            run = Run(kind, m.get("name", run_id.rsplit("-", 1)[0]), m.get("key", {}), profile)
            scalars = {k: v for k, v in m.items() if isinstance(v, (int, float, str, bool)) or v is None}
            rows.append({**flat_key, **scalars, "source": source, "run": run})
    return pd.DataFrame(rows)


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


_recorders: list[list["Job"]] = []


@contextlib.contextmanager
def recording() -> Iterator[list["Job"]]:
    """Inside this block ``ensure`` trains nothing and prints nothing: it appends each job it is asked for
    (finished or not, in order) to the yielded list and returns the run as it stands. How the plan
    (``studylib.dispatch``) learns which runs the report's code needs without training them."""
    jobs: list[Job] = []
    _recorders.append(jobs)
    try:
        yield jobs
    finally:
        _recorders.remove(jobs)


def ensure(run: Run, fit: Callable[[Run], Any], command: str, *, estimate_s: float | None = None,
           force: bool = False, needs: tuple["Job", ...] = (), train: bool | None = None) -> Run:
    """``run`` finished: here (reused), or trained now when this process's mode trains (``train=True``: a
    command that exists to compute it, always), or not at all: then it prints ``command``, the exact command
    that computes it, and returns the unfinished run (``run.done`` is False) for the caller to show as "not
    run". A run another process is training is waited for, then reused (``Mode(wait=False)``: skipped, and
    said so)."""
    if _recorders:
        _recorders[-1].append(Job(run, fit, command, estimate_s, tuple(needs)))
        return run
    if run.done and not force:
        return run
    if not (training_allowed() if train is None else train):
        cost = f" (about {estimate_s / 60:.0f} min here)" if estimate_s else ""
        print(f"not run here: {run.kind}/{run.name}{cost}; compute it with:\n    {command}", flush=True)
        return run
    runtime.check_machine_load(f"{run.kind}/{run.name}")
    try:
        return run.ensure(fit, force=force, wait=waits_for_locks())
    except RunBusy as busy:
        print(f"skipped: {busy}", flush=True)
        return run


@dataclass
class Job:
    """A run with the function that computes it and the command a user would type to do so. ``needs``: jobs
    whose outputs ``fit`` reads (a probe's feature caches), computed first when planned separately."""

    run: Run
    fit: Callable[[Run], Any]
    command: str
    estimate_s: float | None = None
    needs: tuple["Job", ...] = field(default_factory=tuple)

    def ensure(self, force: bool = False, train: bool | None = None) -> Run:
        """``runs.ensure`` of this job: reused, trained (as the mode says, or always with ``train=True``), or
        its command printed."""
        return ensure(self.run, self.fit, self.command, estimate_s=self.estimate_s, force=force, needs=self.needs,
                      train=train)


def measured(profile: str, kind: str, name: str, key: Any, compute: Callable[[], Any], force: bool = False) -> Any:
    """``compute()``'s JSON-able result (a measurement such as latency), stored once as a run of ``kind``
    and read back on later calls with the same key (``force`` measures again). The key names the
    machine and settings, so another machine measures afresh; a shipped measurement is read like a stored one,
    and ``force`` measures into the store, which is read first."""
    run = Run(kind, name, key, profile, marker="result.json")
    if force or not run.done:  # not run.ensure(force=True), which refuses to stand in for a shipped run
        with run.owned():
            run.reset()
            run.write_marker({"key": key, "result": compute()})
    return artifacts.read_json(run.path("result.json"))["result"]  # the same JSON round trip as a cached read
