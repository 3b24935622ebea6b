"""Notebook 07 in a real browser: JupyterLab on loopback, headless Chromium driven by Playwright.

Runs the notebook through JupyterLab's Run menu, clicks an example image's button and the
compare button, and checks that every deployed model's predictions appear in the page; then
uploads a damaged file (a message appears) and a photo (compared like the example).
Screenshots go to test-artifacts/browser/ (git-ignored). Needs Debian's `chromium` and the
Python `playwright` package (.ci/run installs both); skipped with the reason when either is absent.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from image_inputs import bad_inputs, good_inputs
from studylib import config
from studylib.serve import deploy

ARTIFACTS = config.PROJ_ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
NOTEBOOK = "07_demo.ipynb"
GOOD, BAD = good_inputs(), bad_inputs()


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quick_notebook(folder: Path) -> Path:
    """Notebook 07 with its parameters set for the quick profile (one example per class)."""
    nb = nbformat.read(config.NOTEBOOKS_DIR / NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = re.sub(r'^profile = "full"', 'profile = "quick"', cell.source, flags=re.M)
    cell.source = re.sub(r"^examples_per_class = \d+", "examples_per_class = 1", cell.source, flags=re.M)
    assert 'profile = "quick"' in cell.source
    path = folder / NOTEBOOK
    nbformat.write(nb, path)
    return path


def api(url: str, method: str = "GET") -> bytes:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 with a random token, its configuration kept in ``home``."""

    def __init__(self, root: Path, home: Path):
        self.port, self.token = free_port(), secrets.token_hex(16)
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
                   IPYTHONDIR=str(home / "ipython"), MPLBACKEND="module://matplotlib_inline.backend_inline")
        # No news pop-up asking to fetch news from the internet.
        settings = home / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        self.log = (home / "jupyter.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=root)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}; log: {home / 'jupyter.log'}")
            try:
                api(f"{self.base}/api/status?token={self.token}")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer in 90 s; log: {home / 'jupyter.log'}")
                time.sleep(0.5)

    def url(self, path: str) -> str:
        return f"{self.base}{path}?token={self.token}"

    def stop(self) -> None:
        try:  # shuts the kernels down too
            api(self.url("/api/shutdown"), "POST")
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def skip_or_fail(reason: str):
    """Skip locally; fail where the browser test must run ($STUDY_REQUIRE_BROWSER=1, set by .ci/run)."""
    if os.environ.get("STUDY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, but $STUDY_REQUIRE_BROWSER=1 requires the browser test to run")
    pytest.skip(reason)


def playwright_and_chromium():
    """Playwright's sync API and the chromium executable (screenshots folder made), or skip (fail in CI)."""
    try:
        from playwright import sync_api
    except ImportError:
        skip_or_fail("Python package playwright is not installed (pip install -e '.[dev]'; .ci/run does)")
    chromium = chromium_path()
    if chromium is None:
        skip_or_fail("no chromium executable on PATH (apt-get install chromium; .ci/run does)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return sync_api, chromium


@pytest.mark.browser
def test_demo_notebook_in_jupyterlab(quick_models, tmp_path):
    sync_api, chromium = playwright_and_chromium()
    root = tmp_path / "lab"
    root.mkdir()
    quick_notebook(root)
    deployed = deploy.load_all("quick")
    expected_labels = [d.label for d in deployed.values() if d.ok]

    lab = JupyterLab(root, tmp_path / "home")
    page = None
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 2000})
            page.set_default_timeout(60_000)
            try:
                page.goto(lab.url(f"/lab/tree/{NOTEBOOK}"))
                page.locator(".jp-Notebook").first.wait_for()
                # JupyterLab asks which kernel to start on first open: accept the default (Python 3).
                try:
                    page.locator(".jp-Dialog .jp-mod-accept").click(timeout=15_000)
                except sync_api.TimeoutError:
                    pass
                page.locator(".jp-Notebook .jp-Cell").first.click()
                # Run > Run All Cells, as a person would.
                page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
                page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
                # The last cell prints the summary once everything above it has run.
                page.get_by_text(re.compile(r"demo \(quick profile\): \d+ deployed models")).wait_for(timeout=240_000)
                page.screenshot(path=str(ARTIFACTS / "07_demo_after_run_all.png"))

                example = page.locator("button.study-demo-example", has_text="cat").first
                example.scroll_into_view_if_needed()
                example.click()
                page.locator(".study-demo-status", has_text="Ready").wait_for()
                page.locator("button.study-demo-compare").click()
                page.locator(".study-demo-status", has_text="Compared").wait_for(timeout=120_000)

                widget = page.locator(".study-demo-output").first
                rows = widget.locator("tr.study-demo-row")
                assert rows.count() == len(deploy.ROWS)
                text = widget.inner_text()
                for label in expected_labels:
                    assert label in text
                for i in range(rows.count()):
                    probs = rows.nth(i).get_attribute("data-probs")
                    if probs is not None:
                        values = [float(p) for p in probs.split()]
                        assert len(values) == 5 and sum(values) <= 1 + 1e-5
                assert widget.locator("img.study-demo-chart").count() == 1
                assert "CIFAR-10 test image" in page.locator(".study-demo").first.inner_text()
                page.locator(".study-demo").first.scroll_into_view_if_needed()
                page.screenshot(path=str(ARTIFACTS / "07_demo_compare.png"))
                page.locator(".study-demo").first.screenshot(path=str(ARTIFACTS / "07_demo_widget.png"))

                # Uploads through the browser's file input: a damaged file gives a message, a photo works.
                def choose_file(name: str, mime: str, content: bytes) -> None:
                    with page.expect_file_chooser() as chooser:
                        page.locator(".study-demo-upload").first.click()
                    chooser.value.set_files(files=[{"name": name, "mimeType": mime, "buffer": content}])

                choose_file("broken.png", "image/png", BAD["truncated.png"][0])
                page.locator(".study-demo-status", has_text="Cannot use broken.png").wait_for()
                assert "truncated or damaged" in page.locator(".study-demo-status").first.inner_text()
                choose_file("photo.jpg", "image/jpeg", GOOD["large_3000x2000.jpg"])
                page.locator(".study-demo-status", has_text="Ready").wait_for()
                page.locator("button.study-demo-compare").click()
                page.locator(".study-demo-status", has_text="Compared").wait_for(timeout=120_000)
                assert "uploaded: photo.jpg" in page.locator(".study-demo-status").first.inner_text()
                assert widget.locator("tr.study-demo-row").count() == len(deploy.ROWS)
                page.locator(".study-demo").first.screenshot(path=str(ARTIFACTS / "07_demo_upload.png"))
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "07_demo_failure.png"))
                raise
            finally:
                browser.close()
    finally:
        lab.stop()
