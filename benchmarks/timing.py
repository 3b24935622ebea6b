"""The benchmarks' timing (``studylib.timing``'s helper, re-exported) and this machine's measured limits, for stating speed as a fraction of them.

All limits are measured in the calling process (same threads, same torch build), so a benchmark can
report e.g. "training runs at 0.31 of the fp32 matmul limit" rather than a bare images/s.

Units: seconds (s), GFLOP/s = 1e9 floating-point operations per second (int8: 1e9 integer ops/s),
GB/s = 1e9 bytes per second, FLOPs as counted by torch.utils.flop_counter (a matmul = 2*m*n*k;
elementwise ops such as bias adds, activations and norms are not counted).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from studylib.measure.flops import flops_per_example  # noqa: F401  (the benchmarks' FLOP counts: one counter, in the library)
from studylib.timing import rate, time_call  # noqa: F401  (the one timing helper, in the library)

# Where write_results puts its JSON: $BENCH_RESULTS_DIR when set (a test running a benchmark in a
# subprocess points it at a temporary folder), else benchmarks/results. A module-level name so tests
# can also monkeypatch it.
RESULTS_DIR_ENV = "BENCH_RESULTS_DIR"
RESULTS_DIR = Path(os.environ.get(RESULTS_DIR_ENV) or Path(__file__).resolve().parent / "results")


def _rate_best_of(step: Callable[[], object], work_per_call: float, seconds: float, repeats: int = 3) -> tuple[float, int]:
    """Best rate (work units per second) over `repeats` windows of about seconds/repeats each; also total calls."""
    step()  # warm-up: first-call allocation and kernel selection
    best, calls = 0.0, 0
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            step()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds / repeats:
                break
        best, calls = max(best, n * work_per_call / elapsed), calls + n
    return best, calls


def matmul_limit(dtype: torch.dtype, *, n: int = 2048, threads: int | None = None, seconds: float = 2.0) -> dict:
    """Achieved GFLOP/s of n x n @ n x n matmuls on CPU (2*n^3 ops each), best of 3 windows within `seconds`.

    float32 / bfloat16: torch.mm. int8: torch._int_mm (int8 x int8 -> int32), gflops=None plus a reason
    if this build has no CPU kernel for it.
    """
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        out = {"dtype": str(dtype).removeprefix("torch."), "n": n, "threads": torch.get_num_threads()}
        if dtype == torch.int8:
            a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
            b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
            int_mm = getattr(torch, "_int_mm", None)
            if int_mm is None:
                return {**out, "gflops": None, "reason": "torch._int_mm not in this torch build"}
            try:
                int_mm(a[:32, :32], b[:32, :32])
            except (RuntimeError, NotImplementedError) as e:
                return {**out, "gflops": None, "reason": f"torch._int_mm has no CPU kernel: {e}"}
            step = lambda: int_mm(a, b)  # noqa: E731
        else:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            step = lambda: torch.mm(a, b)  # noqa: E731
        flops_per_s, calls = _rate_best_of(step, 2.0 * n**3, seconds)
        return {**out, "gflops": flops_per_s / 1e9, "calls": calls}
    finally:
        torch.set_num_threads(old_threads)


def memory_bandwidth(*, mb: int = 256, seconds: float = 1.0) -> dict:
    """GB/s of dst.copy_(src) for an `mb` MiB float32 tensor, counting read + write bytes; best of 3 windows.

    The memory-bound ceiling: depthwise convolutions and elementwise ops are limited by this, not by matmul GFLOP/s.
    """
    src = torch.randn(mb * 2**20 // 4)  # float32: 4 bytes per element
    dst = torch.empty_like(src)
    moved = 2.0 * src.numel() * src.element_size()  # bytes read + bytes written per copy
    bytes_per_s, calls = _rate_best_of(lambda: dst.copy_(src), moved, seconds)
    return {"mb": mb, "threads": torch.get_num_threads(), "gb_per_s": bytes_per_s / 1e9, "calls": calls}


def _cpuinfo() -> tuple[str, bool]:
    """(CPU model name, AMX-BF16 present) from /proc/cpuinfo; ('unknown', False) where it is unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown", False
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return (m.group(1).strip() if m else "unknown"), bool(re.search(r"\bamx_bf16\b", text))


def cpu_slug() -> str:
    """CPU model as a file-name part, e.g. 'intel-r-xeon-r-platinum-8480c'."""
    return re.sub(r"[^a-z0-9]+", "-", _cpuinfo()[0].lower()).strip("-")[:60] or "unknown"


@functools.lru_cache(maxsize=None)
def machine_limits(quick: bool = False) -> dict:
    """CPU model, AMX, threads, torch version and the measured limits (fp32/bf16/int8 matmul, copy bandwidth).

    Measured once per process (cached). quick=True: n=256 and short windows, for tests (not a real limit).
    """
    n, secs, mb, copy_secs = (256, 0.1, 16, 0.05) if quick else (2048, 2.0, 256, 1.0)
    model, amx = _cpuinfo()
    return {
        "cpu_model": model,
        "amx_bf16": amx,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "quick": quick,
        "matmul": {name: matmul_limit(dt_, n=n, seconds=secs)
                   for name, dt_ in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("int8", torch.int8))},
        "memory_bandwidth": memory_bandwidth(mb=mb, seconds=copy_secs),
    }


def stage_report(name: str, images_per_s: float, flops_per_image: float, limit_gflops: float | None,
                 full_protocol_images: int | None = None) -> dict:
    """One row: achieved GFLOP/s, its fraction of `limit_gflops`, and minutes for `full_protocol_images` at this speed."""
    gflops = images_per_s * flops_per_image / 1e9
    return {
        "stage": name,
        "images_per_s": images_per_s,
        "gflops": gflops,
        "fraction_of_limit": gflops / limit_gflops if limit_gflops else None,
        "implied_minutes": full_protocol_images / images_per_s / 60 if full_protocol_images is not None else None,
    }


def write_results(name: str, payload: dict, *, limits: dict | None = None) -> Path:
    """Write {name, written_utc, machine: limits, **payload} to RESULTS_DIR/<name>-<cpu slug>-<UTC date>.json
    atomically; a second result of the same day gets the time too (<date>-<HHMMSS>): a committed result is never
    replaced.

    limits: the machine_limits() dict already measured by the benchmark; measured here (cached) if omitted.
    """
    now = dt.datetime.now(dt.timezone.utc)
    record = {"name": name, "written_utc": now.isoformat(timespec="seconds"),
              "machine": limits if limits is not None else machine_limits(), **payload}
    folder = Path(RESULTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{cpu_slug()}-{now:%Y-%m-%d}.json"
    if path.exists():
        path = path.with_name(f"{name}-{cpu_slug()}-{now:%Y-%m-%d-%H%M%S}.json")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on the same filesystem: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _cell(v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


def print_table(rows: list[dict]) -> None:
    """Print rows as a fixed-width table; columns are the union of keys in first-seen order, missing cells '–'."""
    if not rows:
        print("(no rows)")
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        # first column (names) left-aligned, numbers right-aligned
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
