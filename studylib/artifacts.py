"""Atomic writes, content hashing and the artifact store.

Nothing is ever left half written: every artifact goes to a temporary file in the same
folder, is flushed to disk, then renamed over its final name (rename is atomic on POSIX).
Artifacts live under ``<artifacts>/<profile>/<kind>/<name>-<hash>/`` where the hash covers
everything that produced them, so quick runs never overwrite full runs and a changed
config never reuses a stale result.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import config


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_json(path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return write_bytes(path, text.encode())


def read_json(path) -> Any:
    return json.loads(Path(path).read_text())


def torch_save(path, obj: Any) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


# ---------------------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------------------
def hash_obj(obj: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-able object (dict key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def hash_tensor(t: torch.Tensor, length: int = 12) -> str:
    """Hash of a tensor's dtype, shape and bytes (used to key artifacts by their data)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:length]


def hash_file(path, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    return digest[:length] if length else digest


# ---------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------
def artifact_dir(profile: str, kind: str, name: str, key: Any) -> Path:
    """Folder for one artifact: ``<artifacts>/<profile>/<kind>/<name>-<hash(key)>``."""
    return config.artifacts_dir() / profile / kind / f"{name}-{hash_obj(key)}"


def latest(profile: str, kind: str, name: str, marker: str = "metrics.json") -> Path:
    """The most recently finished artifact folder of ``name`` (the one holding ``marker``).

    Readers (evaluation, demo) use this to find what a training notebook wrote; it fails
    with a message naming the notebook-producing ``kind`` when nothing is there.
    """
    root = config.artifacts_dir() / profile / kind
    found = sorted(root.glob(f"{name}-*/{marker}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f"no finished {kind!r} artifact for {name!r} in profile {profile!r} under {root}; "
            f"run the notebook that trains it first (python run_all.py --profile {profile})."
        )
    return found[-1].parent


def cached_json(profile: str, kind: str, name: str, key: Any, compute: Callable[[], Any], force: bool = False) -> Any:
    """``compute()``'s JSON-able result, stored once under ``artifact_dir(profile, kind, name, key)``
    and read back on later calls with the same key (``force`` recomputes). For measurements such
    as latency: the key names the machine and settings, so another machine measures afresh."""
    path = artifact_dir(profile, kind, name, key) / "result.json"
    if path.exists() and not force:
        return read_json(path)["result"]
    result = compute()
    write_json(path, {"key": key, "result": result})
    return read_json(path)["result"]  # the same JSON round trip as a cached read
