"""Watching a run in a real headless Chromium: the player plays every step at a chosen pace (play/pause, speed,
scrubber), earlier results are marked as previous while a new run streams, Cancel says where it stopped, one
message area per tab, classroom mode and the phone layout. Screenshots go to the test's tmp dir."""

import re
import time

import pytest
from browser_tools import chromium, needs_chromium, open_page, set_number, wait_state
from space_app import served

from studio.denoisers.optimal import Optimal

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with served(tmp_path_factory.mktemp("outputs")) as app:
        yield app.url


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser, app_url):
    page = open_page(browser, app_url)
    yield page
    page.close()


def shown_step(page) -> int:
    return int(page.get_attribute("#player-label", "data-k") or 0)


def run_and_wait(page, steps: int, n: int = 4) -> None:
    set_number(page, "sample-steps", steps)
    set_number(page, "n", n)
    page.click("#run")
    wait_state(page, "done")
    page.wait_for_function(f"document.querySelectorAll('#player-feed .studio-frame').length === {steps}")


def test_the_player_plays_pauses_changes_speed_and_reaches_every_step(page, tmp_path):
    run_and_wait(page, 40)  # about 0.1 s of computing: the player still shows it step by step
    page.wait_for_function("document.querySelector('#player-label').dataset.k !== undefined")
    # the first chart of a page loads plotly, which can hold the page's thread for a second on a busy machine (the
    # player then cannot step while it is timed): time the player once the run's results are drawn
    page.wait_for_selector("#step-charts .js-plotly-plot", timeout=60_000)
    if page.get_attribute("#player-root", "data-playing") == "0" or shown_step(page) > 30:
        # a busy machine took the 5 s of playing to finish the run: play it again from its first step
        page.eval_on_selector("#player-step", "el => { el.value = 1; el.dispatchEvent(new Event('input', "
                              "{bubbles: true})); }")
        page.click("#player-play")
    first = shown_step(page)
    time.sleep(1.0)
    later = shown_step(page)
    assert page.get_attribute("#player-root", "data-playing") == "1"
    assert first < later < 40, (first, later)  # it plays at 8 steps/s, not at the speed it computed
    label = page.inner_text("#player-label")
    assert re.search(r"step \d+/40 · t = \d+ · ā = [\d.e-]+", label), label
    page.screenshot(path=str(tmp_path / "00-playing.png"))

    page.click("#player-play")  # pause
    paused = shown_step(page)
    time.sleep(0.8)
    assert shown_step(page) == paused and page.inner_text("#player-play").endswith("Play")

    page.select_option("#player-speed", "1")
    page.click("#player-play")
    time.sleep(1.6)
    slow = shown_step(page) - paused
    page.select_option("#player-speed", "20")
    start = shown_step(page)
    time.sleep(1.0)
    fast = shown_step(page) - start
    assert 0 <= slow <= 3 and fast >= 6 and fast > slow, (slow, fast)  # 1 vs 20 steps/s (loose on a busy CPU)

    # every step reached the page: the scrubber shows each one, with its own picture and label
    sources = set()
    for k in range(1, 41):
        page.eval_on_selector("#player-step", "(el, v) => { el.value = v; "
                              "el.dispatchEvent(new Event('input', {bubbles: true})); }", k)
        assert shown_step(page) == k
        sources.add((page.get_attribute("#live-xt img", "src"), page.get_attribute("#live-x0 img", "src")))
    assert len(sources) == 40
    assert page.get_attribute("#player-root", "data-playing") == "0"  # scrubbing pauses
    # 2x2 samples of 8 px: at least 160 screen pixels per sample, nearest-neighbour
    width = page.eval_on_selector("#live-x0 img", "img => img.getBoundingClientRect().width")
    assert width >= 2 * 160
    assert page.eval_on_selector("#live-x0 img", "img => getComputedStyle(img).imageRendering") in ("pixelated", "crisp-edges")
    page.screenshot(path=str(tmp_path / "01-scrubbed.png"))
    print("screenshots:", tmp_path)


def test_previous_results_are_marked_and_cancel_says_where_it_stopped(page, tmp_path, monkeypatch):
    run_and_wait(page, 5)
    page.wait_for_selector("#final-grid img")
    assert page.locator("#results .studio-stale-banner").count() == 0
    slow_denoise = Optimal.denoise

    def slow(self, x_t, t, ab):
        time.sleep(0.05)
        return slow_denoise(self, x_t, t, ab)

    page.get_by_role("tab", name="Neighbours").click()  # the other tabs show the finished run
    page.wait_for_function("document.querySelector('#nb-summary')?.innerText.includes('of 4')")
    page.get_by_role("tab", name="Sample").click()
    monkeypatch.setattr(Optimal, "denoise", slow)
    set_number(page, "sample-steps", 1000)  # 50 s at least: Cancel comes long before
    page.click("#run")
    wait_state(page, "running")
    page.wait_for_selector("#results .studio-stale-banner")
    assert "Previous run" in page.inner_text("#stale-banner")
    assert float(page.eval_on_selector("#run-summary", "el => getComputedStyle(el).opacity")) < 0.6  # greyed
    page.wait_for_function("Number(document.querySelector('#progress .studio-progress').dataset.k) >= 5")
    page.wait_for_function("Number(document.querySelector('#player-label').dataset.k) >= 3")  # plays while it computes
    page.get_by_role("tab", name="Neighbours").click()
    state = page.get_attribute("#progress .studio-progress", "data-state")
    opacity = page.eval_on_selector("#tab-neighbours > .column", "el => getComputedStyle(el).opacity")
    assert float(opacity) < 0.6, (state, opacity)
    assert "Previous run" in page.evaluate("getComputedStyle(document.querySelector('#tab-neighbours'), '::before')"
                                           ".content")
    page.screenshot(path=str(tmp_path / "00b-neighbours-while-streaming.png"))
    page.get_by_role("tab", name="Sample").click()
    assert page.get_attribute("#player-label", "data-total") == "1000"
    page.screenshot(path=str(tmp_path / "00-streaming-over-previous.png"))
    page.click("#cancel")
    wait_state(page, "cancelled")
    label = page.inner_text("#progress")
    k = int(re.search(r"cancelled at step (\d+) of 1000", label).group(1))
    assert 5 <= k < 1000
    banner = page.inner_text("#stale-banner")
    assert f"cancelled at step {k} of 1000" in banner and "Previous run" in banner
    page.select_option("#player-speed", "60")  # play what the cancelled run computed to its end, quickly
    page.wait_for_function("document.querySelector('#player-root').dataset.playing === '0'", timeout=30_000)
    assert page.get_attribute("#player-label", "data-total") == "1000"  # the cancelled run, not the old one
    assert shown_step(page) <= k
    page.wait_for_function("document.querySelector('#player-label').innerText.includes('cancelled at step')")
    page.screenshot(path=str(tmp_path / "01-cancelled.png"))
    print("screenshots:", tmp_path)


def font_px(page, selector: str) -> float:
    return float(page.eval_on_selector(selector, "el => parseFloat(getComputedStyle(el).fontSize)"))


def test_classroom_mode_from_the_address_and_the_toggle(browser, app_url, tmp_path):
    page = open_page(browser, app_url)
    body = "#preset-description"  # filled by a preset; before that, the dataset facts line
    page.wait_for_selector("#intro .studio-explain p")
    assert font_px(page, "#intro .studio-explain p") < 18
    page.click("#classroom input")
    page.wait_for_function("document.body.classList.contains('studio-classroom')")
    assert font_px(page, "#intro .studio-explain p") >= 18
    page.close()

    page = open_page(browser, app_url + "?classroom=1")
    page.wait_for_function("document.body.classList.contains('studio-classroom')")
    page.wait_for_selector("#dataset-info p")
    for selector in ("#dataset-info p", "#intro .studio-explain p", "#progress .studio-progress-label", "#player-label", "#choice-dataset input",
                     "#preset input"):
        assert font_px(page, selector) >= 18, selector
    assert page.is_checked("#classroom input")
    assert not page.is_visible("#config-accordion")  # fewer controls
    run_and_wait(page, 6)
    assert font_px(page, body) >= 18 if page.locator(body).inner_text().strip() else True
    width = page.eval_on_selector("#live-x0 img", "img => img.getBoundingClientRect().width")
    assert width >= 2 * 160 * 1.2  # bigger pictures than the normal page's 160 px per sample
    page.screenshot(path=str(tmp_path / "00-classroom.png"))
    page.close()
    print("screenshots:", tmp_path)


def test_on_a_phone_run_and_the_live_pictures_are_on_the_first_screen(browser, app_url, tmp_path):
    page = open_page(browser, app_url, 390, 844)
    page.screenshot(path=str(tmp_path / "00-phone-first-screen.png"))
    run = page.locator("#run").bounding_box()
    assert run["y"] >= 0 and run["y"] + run["height"] <= 844, run
    for name in ("Sample", "Neighbours", "Locality", "Compare", "Forward process"):  # none behind "…"
        tab = page.get_by_role("tab", name=name).bounding_box()
        assert tab is not None and 0 <= tab["x"] and tab["x"] + tab["width"] <= 390 and tab["y"] < run["y"], name
    page.click("#run")
    wait_state(page, "done")
    page.wait_for_function("document.querySelector('#live-x0 img').naturalWidth > 0")
    picture = page.locator("#live-x0 img").bounding_box()
    assert picture["y"] < 844 - 60 and picture["width"] > 100, picture  # on the first screen, not a thumbnail
    page.screenshot(path=str(tmp_path / "01-phone-running.png"))
    page.locator("#step-charts").scroll_into_view_if_needed()
    page.wait_for_selector("#step-charts .js-plotly-plot")
    titles = page.eval_on_selector_all("#step-charts .annotation-text, #step-charts .gtitle",
                                       "els => els.map(e => { const r = e.getBoundingClientRect(); "
                                       "return [r.left, r.right, r.top, r.bottom]; })")
    for i, a in enumerate(titles):  # chart titles do not overlap each other
        for b in titles[i + 1:]:
            assert a[1] <= b[0] or b[1] <= a[0] or a[3] <= b[2] or b[3] <= a[2], (a, b)
    page.screenshot(path=str(tmp_path / "02-phone-charts.png"), full_page=True)
    page.close()
    print("screenshots:", tmp_path)


def test_forward_slider_follows_the_keyboard_and_dragging_and_inversion_is_explained(page, tmp_path):
    page.get_by_role("tab", name="Forward process").click()
    page.wait_for_function("document.querySelector('#fw-info')?.innerText.includes('t = 500')")
    slider = page.locator("#fw-t input[type=range]")
    slider.focus()
    for _ in range(3):
        slider.press("ArrowRight")
    page.wait_for_function("document.querySelector('#fw-info').innerText.includes('t = 503')", timeout=20_000)
    box = slider.bounding_box()  # drag the thumb from t = 503 to about a quarter of the way
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.503, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.25, y, steps=8)
    page.mouse.up()
    dragged = int(slider.input_value())
    assert 150 < dragged < 350, dragged
    page.wait_for_function(f"document.querySelector('#fw-info').innerText.includes('t = {dragged} ')",
                           timeout=20_000)
    explained = page.inner_text("#tab-forward .studio-explain")  # before anything is inverted
    assert "scaled copy" in explained and "whitened image" in explained and "textbook" in explained
    assert page.input_value("#fw-denoiser input").startswith("auto")  # the textbook picture by default
    page.click("#fw-invert")
    page.wait_for_function("document.querySelector('#fw-inv-info').innerText.includes('reconstruction error')")
    info = page.inner_text("#fw-inv-info")
    std = float(re.search(r"x_T std ([\d.]+)", info).group(1))
    corr = float(re.search(r"correlation with x0 (-?[\d.]+)", info).group(1))
    assert info.startswith("unet") and 0.7 < std < 1.4 and corr < 0.5, info  # optimal's scaled copy: std ≈ 0.3
    page.screenshot(path=str(tmp_path / "00-forward.png"), full_page=True)
    print("screenshots:", tmp_path)


def test_one_message_area_that_replaces_and_clears(page, tmp_path):
    set_number(page, "sample-steps", 4)
    set_number(page, "n", 0)
    page.click("#run")
    page.wait_for_selector("#sample-message .studio-msg")
    first = page.inner_text("#sample-message")
    assert "n (number of samples): 0 is outside 1 … 64 on this instance" in first, first
    set_number(page, "seed", -1)
    set_number(page, "n", 4)
    page.click("#run")
    page.wait_for_function("document.querySelector('#sample-message').innerText.includes('seed')")
    second = page.inner_text("#sample-message")
    assert page.locator("#sample-message .studio-msg").count() == 1 and "n (number" not in second  # replaced
    assert "4,611,686,018,427,387,904" in second and "e+" not in second  # readable numbers
    assert page.locator(".toast-body").count() == 0  # no pop-ups piling up over the controls
    page.screenshot(path=str(tmp_path / "00-message.png"))
    # a broken YAML: one complete line
    page.click("#config-accordion")
    page.locator("#config-yaml .cm-content").fill("sampler: {steps: 3\nn: [")
    page.click("#import-config")
    page.wait_for_function("document.querySelector('#sample-message').innerText.includes('YAML')")
    text = page.inner_text("#sample-message").strip()
    assert "\n" not in text and text.endswith((".", ")")), text
    set_number(page, "seed", 0)
    page.click("#run")
    wait_state(page, "done")
    page.wait_for_function("!document.querySelector('#sample-message .studio-msg')")  # cleared on success
    # datasets that need a download say so in the dropdown
    page.click("#choice-dataset input")
    options = page.get_by_role("option").all_inner_texts()
    assert any("mnist" in o and "downloads on first use" in o for o in options), options
    assert any("digits —" in o and "download" not in o for o in options), options
    page.keyboard.press("Escape")
    print("screenshots:", tmp_path)


def test_a_comparison_preset_runs_both_sides_on_the_compare_tab(page, tmp_path):
    page.click("#preset input")
    page.get_by_role("option", name="DDPM vs DDIM on digits").click()
    page.wait_for_function("document.querySelector('#cmp-progress')?.innerText.includes('done')")
    assert page.get_by_role("tab", name="Compare").get_attribute("aria-selected") == "true"
    table = page.inner_text("#cmp-table")
    assert "ddpm" in table and "ddim" in table and "final samples differ by RMS" in table
    page.screenshot(path=str(tmp_path / "00-compare-preset.png"), full_page=True)
    print("screenshots:", tmp_path)
