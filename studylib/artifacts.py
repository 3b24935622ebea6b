"""Atomic writes and content hashing (the run lifecycle built on them is ``studylib.runs``).

Nothing is ever left half written: every file goes to a temporary file in the same folder, is
flushed to disk, then renamed over its final name (rename is atomic on POSIX).
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


def json_text(obj: Any) -> str:
    """The project's JSON file text (sorted keys, 2-space indent, trailing newline): what ``write_json`` writes."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json(path, obj: Any) -> Path:
    return write_bytes(path, json_text(obj).encode())


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
    """Hash of a tensor's dtype, shape and bytes (used to key artifacts by their data).

    Remembered on the tensor with its version counter, which every in-place change bumps: a split's
    images are hashed once per process, not once per run key (notebook 09 keys 162 feature caches of the
    same 50,000 training images: 19 s of hashing on a fresh clone, 8 s of it copying the bytes first)."""
    version = _version(t)
    memo = getattr(t, "_study_sha256", None)
    if memo is not None and version is not None and memo[0] == version:
        return memo[1][:length]
    c = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{c.dtype}{tuple(c.shape)}".encode())
    if c.numel():
        h.update(c.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, not a copy of it
    digest = h.hexdigest()
    if version is not None:
        t._study_sha256 = (version, digest)
    return digest[:length]


def _version(t: torch.Tensor) -> int | None:
    """The tensor's version counter; None for an inference-mode tensor, which has none (never remembered)."""
    try:
        return t._version
    except RuntimeError:
        return None


def hash_file(path, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    return digest[:length] if length else digest
