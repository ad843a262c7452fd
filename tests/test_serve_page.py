"""The page of `hf-mtl serve` in a real browser: headless Chromium (Debian's `chromium`, driven by playwright) types a
sentence, submits it from the keyboard and finds the highlighted entities, the label and the similarity."""

import os
import shutil

import pytest
from serve_helpers import ThreadedServer

pytest.importorskip("fastapi", reason="the serve extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra has it)")

from hf_mtl.serving import ServeSettings  # noqa: E402

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
pytestmark = [
    pytest.mark.browser,
    # .ci/run installs chromium and sets HF_MTL_REQUIRE_BROWSER=1: in CI a missing browser fails instead of skipping.
    pytest.mark.skipif(CHROMIUM is None and os.environ.get("HF_MTL_REQUIRE_BROWSER") != "1",
                       reason="no Chromium binary on PATH (`apt-get install chromium`; .ci/run does)"),
]


@pytest.fixture(scope="module")
def page(model_dir):
    # The MiniLM folder whose heads are fitted to pipeline_helpers.SENTENCES: its entities and topics are certain.
    with ThreadedServer(ServeSettings(model=str(model_dir), bf16=False)) as server, sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page()
        page.goto(server.url + "/")
        sync_api.expect(page.locator("#model-summary")).to_contain_text("ner (token classification)")
        yield page
        browser.close()


def test_typed_sentence_shows_entities_and_label(page):
    page.locator("#text").fill("Apple opened a store in Paris.")
    page.locator("#text").press("Control+Enter")  # the keyboard is enough
    location = page.locator('[data-task="ner"] mark.entity[data-type="LOC"]')
    sync_api.expect(location).to_have_count(1)
    sync_api.expect(location).to_contain_text("Paris")
    sync_api.expect(page.locator('[data-task="ner"] mark.entity[data-type="ORG"]')).to_contain_text("Apple")
    sync_api.expect(page.locator('[data-task="topic"] .bar-row.best')).to_have_attribute("data-label", "business")
    # The text around the entities is kept as typed.
    sync_api.expect(page.locator('[data-task="ner"] .tagged')).to_have_text("AppleORG opened a store in ParisLOC.")
    assert page.locator("#error").is_hidden()


def test_similarity_of_two_texts(page):
    page.locator("#sim-a").fill("Angela Merkel met Emmanuel Macron in Berlin.")
    page.locator("#sim-b").fill("Angela Merkel met Emmanuel Macron in Berlin.")
    page.locator("#similarity-button").click()
    sync_api.expect(page.locator("#similarity")).to_have_text("cosine similarity: 1.000")


def test_server_errors_are_shown(page):
    page.route("**/predict_all", lambda route: route.fulfill(
        status=429, content_type="application/json", body='{"error": "Model is overloaded", "error_type": "overloaded"}'))
    try:
        page.locator("#text").fill("The weather was nice yesterday.")
        page.locator("#predict-button").click()
        sync_api.expect(page.locator("#error")).to_contain_text("429 Model is overloaded")
    finally:
        page.unroute("**/predict_all")
