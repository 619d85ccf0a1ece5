"""The page of `wildmix serve` in a real browser (headless Chromium through selenium): load
it, upload a file, enhance it, find the A/B player and both spectrograms drawn.

Skips, saying why, where Chromium, its driver or selenium is absent; `make test-browser`
installs them and runs this test, which then also writes the README's screenshot
(``WILDMIX_SCREENSHOT=docs/serve_screenshot.png``).
"""

import os
import shutil
import socket
import threading
import time

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
except ImportError:
    webdriver = None
MISSING = ("no chromium/chromedriver (Debian's chromium and chromium-driver)"
           if not (CHROMIUM and DRIVER) else "selenium is not installed" if webdriver is None
           else None)
if MISSING and os.environ.get("WILDMIX_REQUIRE_BROWSER"):  # make test-browser: no skipping
    raise RuntimeError(f"the browser test cannot run: {MISSING}")
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"{MISSING} (make test-browser "
                                                      "installs what it needs)")
pytest.importorskip("starlette")
pytest.importorskip("multipart")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    import uvicorn

    from wildmix import serve

    port = _free_port()
    config = uvicorn.Config(serve.create_app(tmp_path / "runs"), host="127.0.0.1", port=port,
                            log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    instance.should_exit = True
    thread.join(10)


@pytest.fixture()
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1100,1250",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    yield driver
    driver.quit()


def test_page_enhances_an_uploaded_file(server, browser, tiny_corpus):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 120)
    browser.get(server)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) >= 2)
    noisy = sorted((tiny_corpus / "test" / "noisy").glob("*.wav"))[0]
    browser.find_element(By.ID, "file").send_keys(str(noisy))
    wait.until(ec.element_to_be_clickable((By.ID, "go"))).click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "done"))
    assert browser.find_element(By.ID, "result").is_displayed()
    for canvas in ("spec-noisy", "spec-enhanced"):
        wait.until(lambda d, c=canvas: d.find_element(By.ID, c).get_attribute("data-drawn"))
    player = browser.find_element(By.ID, "player")
    assert player.get_attribute("src").startswith("blob:")
    assert player.get_attribute("data-source") == "enhanced"
    browser.find_element(By.ID, "play-noisy").click()  # A/B: the source switches
    assert player.get_attribute("data-source") == "noisy"
    href = browser.find_element(By.ID, "download").get_attribute("href")
    assert href.startswith("blob:")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] \
        if "goog:loggingPrefs" in browser.capabilities else []
    assert not errors, errors
    if os.environ.get("WILDMIX_SCREENSHOT"):
        browser.find_element(By.ID, "play-enhanced").click()
        browser.save_screenshot(os.environ["WILDMIX_SCREENSHOT"])
