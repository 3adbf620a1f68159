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
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
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


def _upload(driver: webdriver.Chrome, base: str, *paths: Path, stub: str = "") -> str:
    """Load the page afresh, run the script ``stub`` (e.g. to replace ``fetch``), choose ``paths`` in ``#file``
    and wait for the answer; returns the final state."""
    driver.get(f"{base}/")
    if stub:
        driver.execute_script(stub)
    return _choose(driver, *paths)


def _choose(driver: webdriver.Chrome, *paths: Path) -> str:
    """Choose ``paths`` in ``#file`` of the page as it is and wait for the answer; returns the final state."""
    status = driver.find_element(By.ID, "status")
    driver.execute_script("arguments[0].dataset.state = 'chosen'", status)
    driver.find_element(By.ID, "file").send_keys("\n".join(os.fspath(p) for p in paths))
    WebDriverWait(driver, WAIT_S).until(lambda _: status.get_attribute("data-state") in ("done", "error"))
    return str(status.get_attribute("data-state"))


def _entries(driver: webdriver.Chrome) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, "#results li.result")


def _text(el: WebElement, selector: str) -> str:
    return str(el.find_element(By.CSS_SELECTOR, selector).get_attribute("textContent"))


def _visible_error(driver: webdriver.Chrome) -> str:
    error = driver.find_element(By.ID, "error")
    return error.text if error.is_displayed() else ""


def test_page_is_served(server: str) -> None:
    r = httpx.get(f"{server}/", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for needle in ('id="file"', 'class="plate"', 'class="chars"', 'id="error"', 'id="results"', "/v1/recognize"):
        assert needle in r.text
    assert "http://" not in r.text and "https://" not in r.text  # self-contained: nothing loaded from elsewhere
    # /docs and /redoc load Swagger UI and ReDoc from a CDN (blank offline): the page links the schema itself
    assert 'href="/openapi.json"' in r.text and 'href="/docs"' not in r.text and 'href="/redoc"' not in r.text


def test_upload_shows_plate_and_char_confidences(browser: webdriver.Chrome, server: str, plate_file: Path,
                                                  recognizer: Recognizer) -> None:
    want = recognizer.recognize(plate_file)[0]
    assert want.ok and len(want.plate) >= 2
    state = _upload(browser, server, plate_file)
    assert state == "done", _visible_error(browser)
    [entry] = _entries(browser)
    assert entry.get_attribute("data-state") == "done"
    assert _text(entry, ".name") == plate_file.name
    assert _text(entry, ".plate") == want.plate
    assert _text(entry, ".confidence").startswith("confidence ")
    chars = entry.find_elements(By.CSS_SELECTOR, ".chars li")
    assert len(chars) == len(want.plate)
    assert [c.get_attribute("data-char") for c in chars] == list(want.plate)
    for c, w in zip(chars, want.chars, strict=True):
        assert float(c.get_attribute("data-confidence") or "nan") == pytest.approx(w["confidence"], abs=1e-3)
        assert c.find_element(By.CLASS_NAME, "pct").text.endswith("%")
    assert not browser.find_element(By.ID, "error").is_displayed()
    # the result is announced: #status is the aria-live region
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("aria-live") == "polite"
    assert status.text == f"{plate_file.name}: {want.plate}, confidence {100 * want.confidence:.1f}%."
    preview = entry.find_element(By.CLASS_NAME, "preview")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", preview) == 188)


def test_non_image_shows_the_api_error(browser: webdriver.Chrome, server: str, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not an image\n")
    assert _upload(browser, server, bad) == "error"
    [entry] = _entries(browser)
    assert entry.get_attribute("data-state") == "error"
    error = entry.find_element(By.CLASS_NAME, "image-error")
    assert error.is_displayed() and "notes.txt: not a readable image" in error.text
    assert "notes.txt: not a readable image" in browser.find_element(By.ID, "status").text
    assert _text(entry, ".plate") == ""
    assert entry.find_elements(By.CSS_SELECTOR, ".chars li") == []


def test_several_files_are_all_recognized(browser: webdriver.Chrome, server: str, plate_file: Path,
                                          recognizer: Recognizer, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not an image\n")
    want = recognizer.recognize(plate_file)[0].plate
    assert _upload(browser, server, plate_file, bad, plate_file) == "done", _visible_error(browser)
    entries = _entries(browser)
    assert [_text(e, ".name") for e in entries] == [plate_file.name, "notes.txt", plate_file.name]
    assert [e.get_attribute("data-state") for e in entries] == ["done", "error", "done"]
    assert [_text(e, ".plate") for e in entries] == [want, "", want]
    assert "not a readable image" in entries[1].find_element(By.CLASS_NAME, "image-error").text
    status = browser.find_element(By.ID, "status").text
    assert status.count(f"{plate_file.name}: {want}, confidence") == 2 and "notes.txt: not a readable" in status


def test_the_same_file_can_be_chosen_again(browser: webdriver.Chrome, server: str, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not an image\n")
    assert _upload(browser, server, bad) == "error"
    assert _choose(browser, bad) == "error"  # a retry after an error: a change event although the file is the same
    assert len(_entries(browser)) == 1


# The first fetch answers 503 at once, but its body (the error text) only after 1.5 s: by then a newer upload
# has been answered, and the stale error must not replace that result.
SLOW_503_FIRST = """
  const real = window.fetch; let n = 0;
  window.fetch = (...args) => {
    if (n++ > 0) return real(...args);
    const body = new ReadableStream({start(c) { setTimeout(() => {
      c.enqueue(new TextEncoder().encode('{"detail": "stale error"}'));
      c.close();
      window.staleSent = true;
    }, 1500); }});
    return Promise.resolve(new Response(body, {status: 503, headers: {"content-type": "application/json"}}));
  };"""

# The first fetch never answers; it only ends when its signal is aborted.
HUNG_FIRST = """
  const real = window.fetch; let n = 0; window.firstAborted = false;
  window.fetch = (url, init) => {
    if (n++ > 0) return real(url, init);
    return new Promise((_, reject) => init.signal.addEventListener("abort", () => {
      window.firstAborted = true; reject(new DOMException("aborted", "AbortError")); }));
  };"""


def test_a_stale_error_does_not_replace_a_newer_result(browser: webdriver.Chrome, server: str, plate_file: Path,
                                                       recognizer: Recognizer, tmp_path: Path) -> None:
    second = tmp_path / "second.png"
    second.write_bytes(plate_file.read_bytes())
    browser.get(f"{server}/")
    browser.execute_script(SLOW_503_FIRST)
    browser.find_element(By.ID, "file").send_keys(os.fspath(plate_file))  # answered by the slow 503
    assert _choose(browser, second) == "done", _visible_error(browser)
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script("return window.staleSent === true"))
    browser.execute_script("return new Promise((done) => setTimeout(done, 200))")  # let the page read the body
    assert browser.find_element(By.ID, "status").get_attribute("data-state") == "done"
    assert _visible_error(browser) == ""
    [entry] = _entries(browser)
    assert entry.find_element(By.CLASS_NAME, "plate-card").is_displayed()
    assert _text(entry, ".plate") == recognizer.recognize(plate_file)[0].plate


def test_a_new_upload_aborts_the_one_in_flight(browser: webdriver.Chrome, server: str, plate_file: Path,
                                                tmp_path: Path) -> None:
    second = tmp_path / "second.png"
    second.write_bytes(plate_file.read_bytes())
    browser.get(f"{server}/")
    browser.execute_script(HUNG_FIRST)
    browser.find_element(By.ID, "file").send_keys(os.fspath(plate_file))  # never answered
    assert _choose(browser, second) == "done", _visible_error(browser)
    assert browser.execute_script("return window.firstAborted") is True
    assert [_text(e, ".name") for e in _entries(browser)] == ["second.png"]


def test_a_hung_server_times_out(browser: webdriver.Chrome, server: str, plate_file: Path) -> None:
    state = _upload(browser, server, plate_file, stub=HUNG_FIRST + "document.body.dataset.timeoutMs = '300';")
    assert state == "error"
    assert browser.execute_script("return window.firstAborted") is True
    assert "no answer from the server within 0.3 s" in _visible_error(browser)
