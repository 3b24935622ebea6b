"""Where and how code runs: device, autocast precision, thread count, machine facts.

Imports nothing of studylib, so any module can use it without pulling in training code.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path

import torch

PRECISIONS = ("bf16", "fp32")


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" = CUDA when present, else CPU; "cpu" and "cuda[:N]" as given (CUDA checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} asked for, but torch sees no CUDA GPU; use device='auto' or 'cpu'.")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CPU (AVX-512 bf16 / AMX) and CUDA alike; fp32 runs with no autocast."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def num_threads(n: int | None):
    """Run a block with ``n`` torch threads (None: unchanged), restoring the previous count."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# glibc's allocator, told to keep freed memory: by default every tensor above its mmap threshold (128 KB, adapting
# up to 32 MB) is a fresh mmap, and freeing it unmaps it, so the next step page-faults its activations in again
# (300,000 faults/s in a MobileNetV2 training step here, a quarter of the CPU time in the kernel). With the
# threshold and the trim threshold raised, freed blocks stay in the heap and are reused. Same values, less time:
# benchmarks/bench_finetune.py --allocator measures it. glibc reads tunables only at process start, so the
# processes that train (run_all.py's kernels, the executors' jobs, the recipes' commands) start with it set.
ALLOCATOR_ENV = "GLIBC_TUNABLES"
ALLOCATOR_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


def allocator_env() -> dict[str, str]:
    """The environment a training process should start with (empty where the C library is not glibc, or the user
    has set the tunables themselves)."""
    if platform.libc_ver()[0] != "glibc" or os.environ.get(ALLOCATOR_ENV):
        return {}
    return {ALLOCATOR_ENV: ALLOCATOR_TUNABLES}


def restart_with_allocator() -> None:
    """Re-execute this command with ``allocator_env()`` when it was started without it (a recipe's command
    line, before it loads anything): the same command, the same arguments, only the allocator differs."""
    env = allocator_env()  # empty once set: the restarted process does not restart again
    if env:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **env})


_FLUSH_DEPTH = [0]


@contextlib.contextmanager
def flush_denormals():
    """For the block, denormal floats (fp32 magnitudes below 1.2e-38) are read and written as zero (the CPU's
    FTZ/DAZ modes, ``torch.set_flush_denormal``; all of torch's threads). Training with weight decay drives the
    weights of dead channels and their Adam moments there, and every operation on a denormal takes the CPU's slow
    path: a convolution with denormal weights ran 180x slower here (1,260 against 7 ms), and the random-init
    fine-tune's epochs grew from 178 to 624 s as they accumulated (20% of its weights and moments by epoch 10).
    The values they stand for are below anything fp32 arithmetic can add to a weight or logit of normal size.
    Yields whether the CPU supports it. Nested blocks keep it on until the outermost one ends."""
    on = torch.set_flush_denormal(True)
    _FLUSH_DEPTH[0] += 1
    try:
        yield on
    finally:
        _FLUSH_DEPTH[0] -= 1
        if _FLUSH_DEPTH[0] == 0:
            torch.set_flush_denormal(False)


def environment() -> dict:
    """Hardware and versions, recorded with every result: what a number was measured on."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu_name(), "amx": "amx_bf16" in cpu_flags(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "allocator": os.environ.get(ALLOCATOR_ENV) or "default"}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def device_label(metrics: dict) -> str:
    """"cuda (NVIDIA H200)" / "cpu (AMD EPYC, 2 threads)": where a recorded run trained."""
    env = metrics.get("environment", {})
    if str(metrics.get("device", "")).startswith("cuda"):
        return f"cuda ({env.get('gpu', 'GPU')})"
    threads = env.get("threads", "?")
    return f"cpu ({env.get('cpu', '?')}, {threads} thread{'' if threads == 1 else 's'})"


def check_machine_load(what: str, cores: int | None = None) -> str | None:
    """A notice on stderr when the machine is already busy before a heavy stage (1-min load average above
    the core count): two 2-thread jobs on 2 cores slow each other several-fold (measured here: one
    training epoch took 663 s instead of 90 s). Returns the message, or None when the machine is quiet."""
    cores = cores or os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    if load <= cores:
        return None
    msg = (f"{what}: the machine is already loaded (1-min load average {load:.1f} on {cores} cores). Another heavy "
           "process running beside this one slows both several-fold (one epoch measured 663 s instead of 90 s); "
           "wait for it to finish for representative timings.")
    print(f"note: {msg}", file=sys.stderr, flush=True)
    return msg
