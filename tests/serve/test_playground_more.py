"""The playground's forecast and transcribe panels in a real headless Chromium (selenium), against the API's own
replies: the quantile table and the SVG chart of a pasted series, the transcript of a chosen WAV file. Skips,
saying why, without Debian's chromium and chromedriver."""
from __future__ import annotations

import pytest

from tests.serve.conftest import HORIZON, LiveServer
from tests.serve.test_playground import browser  # noqa: F401  (the module's headless Chromium fixture)

VALUES = [20.5, 22.1, 21.0, 19.4, 18.2, 19.9, "nan", 22.4, 21.3, 19.0, 18.1, 20.2, 21.9, 22.5, 20.8, 19.2]


@pytest.fixture(scope="module")
def live_more(served_more):
    from recurrent.serve.app import create_app

    with LiveServer(create_app(served_more)) as server:
        yield server


def test_forecast_and_transcribe_panels(browser, live_more, client_more, speech_runs):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))  # a re-rendered table
    browser.get(live_more.url + "/")
    wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 5)
    Select(browser.find_element(By.ID, "model")).select_by_value("wide")
    assert not browser.find_element(By.ID, "start-label").is_displayed()  # a run without timestamps
    browser.find_element(By.ID, "values").send_keys(", ".join(map(str, VALUES)))
    browser.find_element(By.ID, "go-forecast").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#quantiles td"),
               lambda: f"status {browser.find_element(By.ID, 'status').text!r}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#quantiles tr")
    assert len(rows) == HORIZON + 1
    api = client_more.post("/forecast", json={"model": "wide", "series": [{"id": "pasted", "values": [
        None if v == "nan" else v for v in VALUES]}]}).json()["forecasts"][0]  # the page's defaults
    for h, row in enumerate(rows[1:]):
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert int(cells[0]) == api["steps"][h]
        assert [float(c) for c in cells[1:]] == pytest.approx([api["quantiles"][q][h] for q in ("0.1", "0.5", "0.9")],
                                                               rel=1e-4)
    assert browser.find_elements(By.CSS_SELECTOR, "#chart polygon") and \
        len(browser.find_elements(By.CSS_SELECTOR, "#chart polyline")) == 2

    Select(browser.find_element(By.ID, "model")).select_by_value("hourly")
    assert browser.find_element(By.ID, "start-label").is_displayed()  # timestamps from a first one, by the step
    browser.find_element(By.ID, "go-forecast").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#quantiles td").text.startswith("2024-01-01T16:00"))

    Select(browser.find_element(By.ID, "model")).select_by_value("speech")
    assert not browser.find_element(By.ID, "stream-label").is_displayed()  # bidirectional: no streaming
    wavs = sorted((speech_runs["speech"].parent / "wav").glob("*.wav"))
    texts = [client_more.post("/transcribe", params={"model": "speech"}, content=w.read_bytes(),
                              headers={"Content-Type": "audio/wav"}).json()["text"] for w in wavs]
    i = next(i for i, t in enumerate(texts) if t)  # a file whose transcript shows
    browser.find_element(By.ID, "audio").send_keys(str(wavs[i]))
    browser.find_element(By.ID, "go-transcribe").click()
    wait.until(lambda d: d.find_element(By.ID, "transcript").text.strip(),
               lambda: f"status {browser.find_element(By.ID, 'status').text!r}")
    assert browser.find_element(By.ID, "transcript").text == texts[i].strip()
    assert browser.find_element(By.ID, "status").text == ""
