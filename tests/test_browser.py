"""The studio in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright): pick a preset, run,
look at the results, then the Neighbours, Locality, Compare and Forward tabs. Screenshots go to the test's
tmp dir (printed at the end)."""

import re

import pytest
from browser_tools import chromium, needs_chromium, open_page, set_number, wait_state
from space_app import served

from studio.config import RunConfig

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with served(tmp_path_factory.mktemp("outputs")) as app:
        yield app.url


@pytest.fixture
def page(app_url):
    with chromium() as browser:
        yield open_page(browser, app_url, 1400, 1000)


def test_preset_run_and_every_tab(page, tmp_path):
    shots = []

    def shot(name: str) -> None:
        path = tmp_path / f"{len(shots):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    # the page: a strip of training images and the dataset facts come with the first paint
    page.wait_for_selector("#dataset-strip img")
    assert "N = 1,797" in page.inner_text("#dataset-info")

    # a preset fills the controls and shows its description
    page.click("#preset input")
    page.get_by_role("option", name="The optimal denoiser memorises").click()
    page.wait_for_function("document.querySelector('#preset-description').innerText.includes('softmax')")
    assert page.input_value("#choice-sample-denoiser input") == "optimal"
    # one click per lesson: the preset runs and the page lands on Neighbours, where its point is seen
    page.wait_for_function("document.querySelector('#nb-summary')?.innerText.includes('16 of 16')")
    assert page.get_by_role("tab", name="Neighbours").get_attribute("aria-selected") == "true"
    shot("preset-lands-on-neighbours")
    page.get_by_role("tab", name="Sample").click()
    set_number(page, "sample-steps", 12)
    set_number(page, "n", 4)
    shot("preset")

    page.click("#run")
    page.wait_for_selector("#live-x0 img")
    page.wait_for_function("document.querySelector('#progress').innerText.includes('done · 12/12')")
    wait_state(page, "done", "#progress")
    page.wait_for_selector("#final-grid img")
    label = page.inner_text("#progress")
    assert re.search(r"done · 12/12 steps", label)
    summary = page.inner_text("#run-summary")
    assert "12 steps · 4 samples" in summary and "memorised: 100%" in summary
    assert page.eval_on_selector("#final-grid img", "img => img.naturalWidth") > 0
    page.wait_for_selector("#step-charts .js-plotly-plot")
    shot("sample-done")

    # the exported YAML is the run's config
    page.click("#config-accordion")
    page.click("#export-config")
    page.wait_for_function("document.querySelector('#config-yaml').innerText.includes('steps: 12')")
    text = page.inner_text("#config-yaml .cm-content")
    cfg = RunConfig.from_yaml(text)
    assert (cfg.denoiser.name, cfg.sampler.steps, cfg.n) == ("optimal", 12, 4)

    page.get_by_role("tab", name="Neighbours").click()
    page.wait_for_function("document.querySelector('#nb-summary').innerText.includes('4 of 4')")
    assert "final samples are flagged memorised" in page.inner_text("#nb-summary")
    page.wait_for_function("document.querySelector('#nb-table').innerText.includes('score (d1/d2)')")
    assert page.locator("#nb-table tbody tr").count() == 4  # one row per sample
    assert page.locator("#nb-table tr.studio-copy").count() == 4  # all memorised, marked as such
    assert page.inner_text("#nb-table").split().count("yes") == 4
    page.wait_for_selector("#nb-picture img")
    shot("neighbours")

    page.get_by_role("tab", name="Locality").click()
    page.wait_for_selector("#loc-row .js-plotly-plot")
    page.wait_for_selector("#loc-mask .js-plotly-plot")
    assert "pixel (x=4, y=4)" in page.inner_text("#loc-info")
    assert "input values" in page.inner_text("#loc-mask-note")
    picture = page.locator("#loc-picture img")
    box = picture.bounding_box()
    picture.click(position={"x": box["width"] * 1.5 / 8, "y": box["height"] * 6.5 / 8})  # pixel (1, 6)
    page.wait_for_function("document.querySelector('#loc-info').innerText.includes('pixel (x=1, y=6)')")
    shot("locality")

    page.get_by_role("tab", name="Compare").click()
    for side in ("a", "b"):
        set_number(page, f"cmp-{side}-steps", 10)
    assert page.input_value("#choice-cmp-a-sampler input") == "ddpm"
    assert page.input_value("#choice-cmp-b-sampler input") == "ddim"
    page.click("#cmp-run")
    wait_state(page, "done", "#cmp-progress")
    page.wait_for_selector("#cmp-chart .js-plotly-plot")
    table = page.inner_text("#cmp-table")
    assert "ddpm" in table and "ddim" in table and "Same seed (0)" in table
    shot("compare")

    page.get_by_role("tab", name="Forward process").click()
    page.wait_for_function("document.querySelector('#fw-info').innerText.includes('SNR')")
    assert "t = 500" in page.inner_text("#fw-info")
    set_number(page, "fw-steps", 20)
    page.click("#fw-invert")
    page.wait_for_function("document.querySelector('#fw-inv-info').innerText.includes('reconstruction error')")
    shot("forward")
    print("screenshots:", *shots, sep="\n  ")
    assert all(p.stat().st_size > 10_000 for p in shots)
