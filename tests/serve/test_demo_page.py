"""The demo page at ``GET /`` in a real browser: headless Debian Chromium driven by Selenium.

Skipped when ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` is missing (``make test`` installs them
with ``scripts/ci_system_deps.sh`` where it can) or Selenium is not installed.  The driver is given
explicitly, so Selenium Manager never tries to download one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest

from lprnet.data.synth import generate
from lprnet.recognizer import Recognizer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"browser test needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver; "
                "see scripts/ci_system_deps.sh)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="browser test needs selenium (pip install selenium)")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def plate_file(tmp_path_factory: pytest.TempPathFactory, recognizer: Recognizer) -> Path:
    """A rendered plate, written at twice the model input size (so the server resizes it).

    The test weights are random, so the first of the rendered plates that they read as at least two
    characters is used (several characters make the per-character list worth checking); the choice
    follows the generator, not a hard-coded seed.
    """
    path = tmp_path_factory.mktemp("demo") / "plate.png"
    for bgr, _, _ in generate(50, seed=6):
        cv2.imwrite(str(path), cv2.resize(bgr, (188, 48)))
        if len(recognizer.recognize(path)[0].plate) >= 2:
            return path
    raise AssertionError("none of 50 rendered plates reads as two or more characters with the test weights")


def _upload(driver: webdriver.Chrome, base: str, path: Path) -> str:
    """Load the page afresh, choose ``path`` in ``#file`` and wait for the answer; returns the final state."""
    driver.get(f"{base}/")
    driver.find_element(By.ID, "file").send_keys(os.fspath(path))
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, WAIT_S).until(lambda _: status.get_attribute("data-state") in ("done", "error"))
    return str(status.get_attribute("data-state"))


def test_page_is_served(server: str) -> None:
    r = httpx.get(f"{server}/", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for needle in ('id="file"', 'id="plate"', 'id="chars"', 'id="error"', "/v1/recognize"):
        assert needle in r.text
    assert "http://" not in r.text and "https://" not in r.text  # self-contained: nothing loaded from elsewhere


def test_upload_shows_plate_and_char_confidences(browser: webdriver.Chrome, server: str, plate_file: Path,
                                                  recognizer: Recognizer) -> None:
    want = recognizer.recognize(plate_file)[0]
    assert want.ok and len(want.plate) >= 2
    state = _upload(browser, server, plate_file)
    assert state == "done", browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "plate").text == want.plate
    assert browser.find_element(By.ID, "confidence").text.startswith("confidence ")
    chars = browser.find_elements(By.CSS_SELECTOR, "#chars li")
    assert len(chars) == len(want.plate)
    assert [c.get_attribute("data-char") for c in chars] == list(want.plate)
    for c, w in zip(chars, want.chars, strict=True):
        assert float(c.get_attribute("data-confidence") or "nan") == pytest.approx(w["confidence"], abs=1e-3)
        assert c.find_element(By.CLASS_NAME, "pct").text.endswith("%")
    assert not browser.find_element(By.ID, "error").is_displayed()
    preview = browser.find_element(By.ID, "preview")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", preview) == 188)


def test_non_image_shows_the_api_error(browser: webdriver.Chrome, server: str, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not an image\n")
    assert _upload(browser, server, bad) == "error"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    assert "notes.txt: not a readable image" in error.text
    assert browser.find_element(By.ID, "plate").text == ""
    assert browser.find_elements(By.CSS_SELECTOR, "#chars li") == []
