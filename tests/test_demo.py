"""The notebook-07 widget, driven programmatically as a person would click it (quick-profile runs of\nevery row, untrained weights: the widget is under test, not the models)."""

import re
from datetime import datetime, timezone

import pytest
from conftest import set_run_mode

from image_inputs import bad_inputs, good_inputs
from studylib.serve import deploy, demo, predict

GOOD, BAD = good_inputs(), bad_inputs()


@pytest.fixture
def app(quick_models):
    return demo.build("quick", examples_per_class=1)


def upload(app, name: str, content: bytes) -> None:
    """What the browser's FileUpload sends when a file is chosen (ipywidgets 8 value format)."""
    app.upload.value = ({"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
                         "last_modified": datetime.now(timezone.utc)},)


def rows_of(html_text: str) -> dict[str, list[float] | None]:
    """model name -> the listed top-5 probabilities (None for a model that did not run)."""
    out = {}
    for m in re.finditer(r'<tr class="study-demo-row[^"]*" data-model="(\w+)"(?: data-probs="([^"]*)")?', html_text):
        out[m.group(1)] = [float(p) for p in m.group(2).split()] if m.group(2) else None
    return out


def assert_every_model_listed(app):
    rows = rows_of(app.output.value)
    assert list(rows) == list(tuple(deploy.ROW))  # every study model, in report order
    ran = [name for name, d in app.deployed.items() if d.ok]
    assert {"custom_cnn", "vit_small"} <= set(ran)
    for name in tuple(deploy.ROW):
        probs = rows[name]
        if name in ran:
            assert len(probs) == 5 and sum(probs) <= 1 + 1e-5 and probs == sorted(probs, reverse=True), name
            assert all(p >= 0 for p in probs)
        else:
            assert probs is None and app.deployed[name].status in app.output.value
    assert "study-demo-chart" in app.output.value and "data:image/png;base64," in app.output.value
    assert [r.name for r in app.results] == list(tuple(deploy.ROW))


def test_example_click_then_compare(app):
    assert app.compare_button.disabled  # nothing chosen yet
    assert len(app.examples) == 10 and [e.true_class for e in app.examples] == list(app.classes)
    app.example_buttons[3].click()
    assert not app.compare_button.disabled and "true class: cat" in app.input_info.value
    app.compare_button.click()
    assert "Compared" in app.status.value, app.status.value
    assert_every_model_listed(app)
    for r in app.results:
        if r.ok:
            assert r.ms > 0 and f"{r.ms:.1f}" in app.output.value


# Each upload is converted by studylib.serve.predict (tested there input by input); here every kind must
# be accepted by the widget, and a representative set goes through a full comparison.
COMPARED = ("rgb.jpg", "gray16.png", "cmyk.jpg", "animated.gif", "palette_transparent.png")


@pytest.mark.parametrize("name", sorted(GOOD))
def test_upload(app, name):
    upload(app, name, GOOD[name])
    assert "Ready" in app.status.value, app.status.value
    assert name in app.input_info.value and bytes(app.preview.value).startswith(b"\x89PNG")
    assert not app.compare_button.disabled
    if name in COMPARED:
        app.compare_button.click()
        assert "Compared" in app.status.value, app.status.value
        assert_every_model_listed(app)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_upload_shows_a_message(app, name):
    app.example_buttons[0].click()
    raw, phrase = BAD[name]
    upload(app, name, raw)  # must not raise
    assert "study-demo-error" in app.status.value and f"Cannot use <b>{name}</b>" in app.status.value
    assert phrase.replace("the uploaded file", "the file") in app.status.value
    assert "true class: airplane" in app.input_info.value  # the previous image is still the current one
    assert not app.compare_button.disabled


def test_widget_still_works_after_bad_uploads(app):
    for name, (raw, _) in BAD.items():
        upload(app, name, raw)
    assert app.compare_button.disabled and app.image is None  # no image was ever usable
    app.compare_button.click()
    assert "Choose an example image or upload one first" in app.status.value
    upload(app, "ok.png", GOOD["rgb.png"])
    app.compare_button.click()
    assert_every_model_listed(app)


def test_gradcam_overlay(app):
    if demo.gradcam is None:
        pytest.skip("studylib.measure.gradcam is not in this checkout")
    app.example_buttons[1].click()
    app.gradcam_box.value = True
    app.compare_button.click()
    assert "Compared" in app.status.value and "Grad-CAM failed" not in app.status.value
    cams = app.gradcams(app.results)
    for name, d in app.deployed.items():
        if d.ok:
            cam = cams[name]
            assert not isinstance(cam, str), cam
            assert cam.shape == (32, 32) and cam.min() >= 0 and cam.max() <= 1


def test_failing_callback_becomes_a_message(app, monkeypatch):
    app.example_buttons[0].click()

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(predict, "predict_all", broken)
    app.compare_button.click()  # must not raise
    assert "Something went wrong: RuntimeError: simulated failure" in app.status.value
    assert not app.compare_button.disabled
    monkeypatch.undo()
    app.compare_button.click()
    assert_every_model_listed(app)


def test_models_load_once(app):
    again = demo.build("quick", examples_per_class=1)
    for name, d in app.deployed.items():
        if d.ok:
            assert again.deployed[name].model is d.model


def test_missing_models_name_the_notebook(artifact_root, real_data_dir, monkeypatch):
    monkeypatch.setenv("STUDY_WEIGHTS_OFFLINE", "1")
    set_run_mode(monkeypatch, use_shipped=False)
    app = demo.build("quick", data_dir=real_data_dir, examples_per_class=1)
    info = app.models_info.value
    assert "Custom CNN (study recipe): <i>missing: run notebook 02_scratch_cnn" in info
    assert "ViT-Small (reference code): <i>missing: run notebook 04_vit" in info
    assert "No model can run: train them first (python run_all.py --retrain 02 03 04" in info
    app.example_buttons[0].click()
    assert app.compare_button.disabled
    assert app.compare() == [] and "run notebook 02_scratch_cnn" in app.status.value


def test_static_report_of_the_examples(app):
    report = demo.example_predictions(app)
    ran = [d.label for d in app.deployed.values() if d.ok]
    assert list(report.summary.index) == ran and list(report.table.columns) == ran
    assert (report.summary["examples"] == 10).all() and report.summary["correct"].between(0, 10).all()
    assert report.p_true.shape == (len(ran), 10) and ((report.p_true >= 0) & (report.p_true <= 1)).all().all()
    assert list(report.table.index.get_level_values("true class")) == list(app.classes)
