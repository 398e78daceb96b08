"""The page of ``fcpose serve`` in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, which ``make test`` installs when missing) driven by Selenium loads ``/``, uploads the
bundled scene through the file input, and must show the people the API finds and draw them on the canvas.
The screenshot is kept under the test's temporary folder (``serve_page.png``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="fcpose serve needs the [serve] extra")
pytest.importorskip("uvicorn", reason="fcpose serve needs the [serve] extra")
pytest.importorskip("multipart", reason="fcpose serve needs the [serve] extra")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the [dev] extra)")

from helpers import serve_in_thread  # noqa: E402
from PIL import Image  # noqa: E402

import fcpose  # noqa: E402
from fcpose.assets import DEMO_MODEL, asset  # noqa: E402
from fcpose.assets import SCENE as SCENE_FILE  # noqa: E402
from fcpose.data.images import read_image  # noqa: E402
from fcpose.serve.app import ServeSettings, create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = asset(DEMO_MODEL)
SCENE = asset(SCENE_FILE)


def _browser() -> tuple[str, str]:
    chromium = os.environ.get("FCPOSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("FCPOSE_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no chromium / chromedriver on PATH (make test installs Debian's chromium and chromium-driver "
                    "when it runs as root with apt; or set FCPOSE_CHROMIUM and FCPOSE_CHROMEDRIVER)")
    return chromium, driver


@pytest.fixture
def browser(monkeypatch):
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser()
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not try to download anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,900", "--disable-extensions", "--no-first-run",
                # a synthetic webcam (a moving test pattern), allowed without asking
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def test_page_uploads_a_photo_and_draws_the_people(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    predictor = fcpose.Predictor.from_checkpoint(DEMO, batch_size=4)
    app = create_app(predictor, settings=ServeSettings(max_batch=4, max_wait_ms=5),
                     info={"backend": "torch", "device": "cpu", "weights": DEMO.name})
    with serve_in_thread(app) as url:
        # what the API says for the page's request (draw and score threshold 0.3, the page's default)
        req = urllib.request.Request(f"{url}/v1/predict?draw_threshold=0.3&score_threshold=0.3",
                                     data=SCENE.read_bytes(), headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            api = json.loads(resp.read())
        assert api["num_drawn"] > 0

        browser.get(url + "/")
        WebDriverWait(browser, 30).until(lambda d: "synth_r18" in d.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "file").send_keys(str(SCENE))
        count = browser.find_element(By.ID, "count")
        WebDriverWait(browser, 60).until(lambda d: count.get_attribute("data-state") in ("done", "error"))
        error = browser.find_element(By.ID, "error")
        assert count.get_attribute("data-state") == "done", error.text
        shown, shown_text = int(count.get_attribute("data-count")), count.text
        browser.save_screenshot(str(tmp_path / "serve_page.png"))
        canvas_png = browser.execute_script("return document.getElementById('canvas').toDataURL('image/png');")

        # the webcam: frames go one at a time, each as soon as the previous answer is back
        before = app.state.metrics.batch_sizes()["images"]
        browser.find_element(By.ID, "camera").click()
        details = browser.find_element(By.ID, "details")
        WebDriverWait(browser, 60).until(lambda d: "frames/s" in details.text
                                         and app.state.metrics.batch_sizes()["images"] - before >= 3)
        webcam_text = details.text
        browser.save_screenshot(str(tmp_path / "serve_webcam.png"))
        browser.find_element(By.ID, "camera").click()  # stop
        errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]

    assert shown == api["num_drawn"]
    assert shown_text == f"{shown} {'person' if shown == 1 else 'people'}"
    assert (tmp_path / "serve_page.png").stat().st_size > 10_000
    assert not errors, errors  # no JavaScript errors, no refused resource (CSP)
    assert webcam_text.startswith("webcam ") and "ms per frame" in webcam_text, webcam_text

    # the canvas is the photo with the people drawn on it: same size, and changed where their skeletons are
    canvas = np.asarray(Image.open(io.BytesIO(base64.b64decode(canvas_png.split(",", 1)[1]))).convert("RGB"))
    photo = read_image(SCENE)
    assert canvas.shape == photo.shape
    changed = np.abs(canvas.astype(int) - photo.astype(int)).max(axis=2) > 60
    assert 0.005 < changed.mean() < 0.5, changed.mean()
    drawn = [p for p in api["people"] if p["drawn"]]
    hits = 0
    for person in drawn:  # every drawn person's confident keypoints are painted over
        for x, y, s in person["keypoints"]:
            if s > 0.3:
                xi, yi = min(int(x), photo.shape[1] - 1), min(int(y), photo.shape[0] - 1)
                hits += changed[max(0, yi - 2):yi + 3, max(0, xi - 2):xi + 3].any()
    confident = sum(s > 0.3 for p in drawn for _, _, s in p["keypoints"])
    assert hits >= 0.9 * confident, (hits, confident)
