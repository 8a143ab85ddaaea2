"""The playground in a real headless Chromium (selenium): load the page, type a prime, watch the generated text
stream in as spans coloured by a hidden unit; translate and see the attention heatmap; classify a sentence.
Skips, saying why, without Debian's chromium and chromedriver.

The screenshot goes to $RECURRENT_PLAYGROUND_PNG (default: the test's tmp folder)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs chromium and chromedriver (Debian: apt install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,900"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    except Exception as e:  # noqa: BLE001  (a browser that cannot start here is a skip, with its reason)
        pytest.skip(f"chromium did not start: {str(e).splitlines()[0]}")
    yield driver
    driver.quit()


def test_playground_streams_coloured_text_translates_and_classifies(browser, live, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))  # a re-rendered table
    browser.get(live.url + "/")
    wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 5)
    Select(browser.find_element(By.ID, "model")).select_by_value("chars")
    prime = browser.find_element(By.ID, "prime")
    prime.clear()
    prime.send_keys("the cat ")
    length = browser.find_element(By.ID, "length")
    length.clear()
    length.send_keys("120")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: d.find_element(By.ID, "output").get_attribute("data-finished") == "length",
               lambda: f"status {browser.find_element(By.ID, 'status').text!r}, output "
                       f"{browser.find_element(By.ID, 'output').text!r}")
    generated = browser.find_elements(By.CSS_SELECTOR, "#output span.generated")
    assert len(generated) == 120
    coloured = [s for s in generated if s.get_attribute("data-activation") is not None]
    assert len(coloured) == 120 and all("background" in s.get_attribute("style") for s in coloured)
    assert all(-1 <= float(s.get_attribute("data-activation")) <= 1 for s in coloured)  # an LSTM's h is in (-1, 1)
    primed = browser.find_elements(By.CSS_SELECTOR, "#output span.prime")
    assert "".join(s.get_attribute("textContent") for s in primed) == "the cat "
    assert all(s.get_attribute("data-activation") is not None for s in primed)  # the prime is coloured too
    shot = Path(os.environ.get("RECURRENT_PLAYGROUND_PNG", tmp_path / "playground.png"))
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    Select(browser.find_element(By.ID, "model")).select_by_value("reverse")
    browser.find_element(By.ID, "source").send_keys("a b c")
    browser.find_element(By.ID, "go-translate").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap td"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#heatmap tr")
    assert len(rows) >= 2 and len(rows[1].find_elements(By.TAG_NAME, "td")) == 3  # one cell per source subword

    Select(browser.find_element(By.ID, "model")).select_by_value("sent")
    browser.find_element(By.ID, "sentence").send_keys("a good film")
    browser.find_element(By.ID, "go-predict").click()
    wait.until(lambda d: "label:" in d.find_element(By.ID, "prediction").text)
    assert browser.find_element(By.ID, "status").text == ""
