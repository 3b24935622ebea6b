"""The Gradio app (python -m studylib.serve.app): its callback on the quick-profile models, and the app in a real
browser (headless Chromium driven by Playwright), as the notebook demo is tested in tests/test_browser.py.

Needs the optional extra (pip install -e ".[dev,app]"; .ci/run installs it): skipped without gradio, playwright
or chromium, unless $STUDY_REQUIRE_BROWSER=1 (CI), where a missing piece fails the browser test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from image_inputs import bad_inputs, good_inputs
from studylib import config
from studylib.report import headline
from studylib.serve import deploy
from test_browser import ARTIFACTS, CHROMIUM_ARGS, playwright_and_chromium, skip_or_fail

GOOD, BAD = good_inputs(), bad_inputs()


def rows_of(html_text: str) -> dict[str, list[float] | None]:
    import re

    return {m.group(1): [float(p) for p in m.group(2).split()] if m.group(2) else None
            for m in re.finditer(r'<tr class="study-demo-row[^"]*" data-model="(\w+)"(?: data-probs="([^"]*)")?',
                                 html_text)}


def test_predict_callback_every_model_and_bad_input(quick_models, tmp_path):
    from studylib.serve import app

    deployed = deploy.load_all("quick", indexed=True)
    photo, broken = tmp_path / "photo.jpg", tmp_path / "broken.png"
    photo.write_bytes(GOOD["rgb.jpg"])
    broken.write_bytes(BAD["truncated.png"][0])
    status, table, chart = app.run(deployed, str(photo), app.ALL, 3, False, False)
    assert "Predicted with" in status and chart is not None
    rows = rows_of(table)
    assert list(rows) == list(deploy.ROW)
    for key, probs in rows.items():
        assert (probs is not None) == deployed[key].ok
        if probs is not None:
            assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    assert "not measured" in table  # latency only when asked for
    status, table, _ = app.run(deployed, str(photo), "custom_cnn", 2, True, False, True)
    assert list(rows_of(table)) == ["custom_cnn"] and "warm-up passes" in table
    status, table, chart = app.run(deployed, str(broken), app.ALL, 5, False, False)
    assert "could not be decoded" in status and table == "" and chart is None  # the command line's message
    status, _, _ = app.run(deployed, None, app.ALL, 5, False, False)
    assert "Choose an image first" in status


def test_benchmark_tab_reads_the_published_results(tmp_path):
    from studylib.serve import app

    text = app.results_dir_markdown(headline.DEFAULT_RESULTS)
    assert headline.table(headline.DEFAULT_RESULTS) in text and headline.answer(headline.DEFAULT_RESULTS) in text
    assert "No benchmark results here" in app.results_dir_markdown(tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.browser
def test_app_in_a_real_browser(quick_models, tmp_path):
    try:
        import gradio  # noqa: F401
    except ImportError:
        skip_or_fail("Python package gradio is not installed (pip install -e '.[app]'; .ci/run does)")
    sync_api, chromium = playwright_and_chromium()
    photo = tmp_path / "photo.png"
    photo.write_bytes(GOOD["rgb.png"])
    deployed = deploy.load_all("quick", indexed=True)
    port = free_port()
    log = open(tmp_path / "app.log", "w")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(config.PROJ_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "studylib.serve.app", "--profile", "quick", "--port", str(port)],
                            cwd=config.PROJ_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 600  # loading every model on a busy 2-core machine takes a while
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"the app did not start: {(tmp_path / 'app.log').read_text()[-3000:]}")
                time.sleep(1)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(300_000)
            page.goto(url)
            page.locator("#study-image input[type=file]").set_input_files(str(photo))
            page.wait_for_timeout(1000)
            page.locator("#study-predict").click()
            rows = page.locator("#study-results tr.study-demo-row")
            rows.nth(len(deploy.ROWS) - 1).wait_for()
            page.screenshot(path=str(ARTIFACTS / "app_predict.png"), full_page=True)
            assert rows.count() == len(deploy.ROWS)
            assert "Predicted with" in page.locator("#study-status").inner_text()
            for i in range(rows.count()):
                row = rows.nth(i)
                key = row.get_attribute("data-model")
                probs = row.get_attribute("data-probs")
                if deployed[key].ok:  # top-5 for every model that runs
                    values = [float(p) for p in probs.split()]
                    assert len(values) == 5 and values == sorted(values, reverse=True), key
                else:
                    assert probs is None and deployed[key].status in row.inner_text()
            page.get_by_role("tab", name="Benchmark").click()
            page.locator("#study-benchmark").get_by_text("Benchmark", exact=True).wait_for()
            page.screenshot(path=str(ARTIFACTS / "app_benchmark.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
