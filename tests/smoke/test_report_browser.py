"""The run report as a person sees it, in headless Chromium (Debian's chromium + chromium-driver, driven by selenium):
every section there, the highlighted tokens are exactly the trained labels of the row, the quarantine table lists the
planted bad rows with their lines, the plots are drawn, hostile text stays text, no console error and no network
request; a run with 100k metric rows and 10k quarantined rows opens in under 2 s and stays under 10 MB; the
comparison page. One browser for the module; the run directories are built without training (tests/unit/report_kit).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from qwen35_tune.report import browser as chromium
from qwen35_tune.report.page import SECTIONS, write_comparison, write_report
from qwen35_tune.rundir import RunDir
from tests.unit.report_kit import BAD_LINES, HOSTILE, make_run, metrics_lines

pytestmark = [pytest.mark.smoke, pytest.mark.browser]

LARGE_METRICS, LARGE_QUARANTINE = 100_000, 10_000


@pytest.fixture(scope="module")
def browser():
    why = chromium.missing()
    if why is not None:
        pytest.skip(f"no headless browser here: {why}")
    with chromium.chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def kit_run(tmp_path_factory, tiny_tokenizer) -> RunDir:
    run = make_run(tmp_path_factory.mktemp("report-kit"), tiny_tokenizer)
    write_report(run.path)
    return run


@pytest.fixture(scope="module")
def opened(browser, kit_run) -> dict:
    """The kit run's page, loaded once: what the browser logged and fetched while loading it."""
    return chromium.open_page(browser, kit_run.report_html)


def _js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def test_every_section_is_shown_with_no_console_error_and_no_request(browser, kit_run, opened):
    assert opened["console"] == []
    assert opened["requests"] == [kit_run.report_html.resolve().as_uri()]  # the file itself, nothing else
    for section, title in SECTIONS:
        element = browser.find_element("id", section)
        assert element.is_displayed() and element.size["height"] > 40, section
        assert element.find_element("tag name", "h2").text == title
    summary = browser.find_element("id", "summary").text
    assert "finished" in summary and "tiny://dense" in summary and "merged model" in summary
    assert "math thinking: accuracy 0.5" in summary


def test_highlighted_tokens_are_the_rows_trained_labels(browser, kit_run, opened):
    """Each rendered row is rendered again here exactly as training does; the text of the tokens the page highlights
    is the text of the tokens whose label is trained, and highlighted tokens look different from masked ones."""
    from qwen35_tune.data.preview import preview_row
    from qwen35_tune.data.sources import iter_card_rows
    from qwen35_tune.models.load import load_tokenizer

    recipe = kit_run.recipe
    tokenizer = load_tokenizer(str(kit_run.adapter))
    (_, card), = recipe.card_pairs()
    rows = {(source, number): raw for source, number, raw in iter_card_rows(card)}
    views = browser.find_elements("css selector", ".row-view")
    assert {v.get_attribute("data-kinds") for v in views} >= {"thinking", "tool"}
    for view in views:
        key = (view.get_attribute("data-source"), int(view.get_attribute("data-row")))
        rendered = preview_row(card, recipe.chat, None, tokenizer, *key, rows[key]).row
        enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
        trained = [rendered.text[a:b] for (a, b), label in zip(enc["offset_mapping"], rendered.labels, strict=True)
                   if label != -100]
        shown = _js(browser, "return Array.from(arguments[0].querySelectorAll('.tok.trained'))"
                             ".map(e => e.textContent);", view)
        assert shown == trained, key
        assert _js(browser, "return arguments[0].querySelector('pre.tokens').textContent;", view) == rendered.text
    colours = _js(browser, "return ['.tok.trained', '.tok.masked'].map(s => "
                           "getComputedStyle(document.querySelector(s)).backgroundColor);")
    assert colours[0] != colours[1]


def test_the_quarantine_table_lists_the_planted_rows_with_their_lines(browser, opened):
    cells = _js(browser, "return Array.from(document.querySelectorAll('table.quarantine-rows tbody tr'))"
                         ".map(r => Array.from(r.cells).map(c => c.textContent.trim()));")
    assert {(file, int(line)) for _, file, line, _, _ in cells} == {("planted.jsonl", n) for n in BAD_LINES}
    reasons = {int(line): reason for _, _, line, reason, _ in cells}
    assert reasons[4].startswith("bad JSON") and "unknown role 'bot'" in reasons[6]
    raw_of_6 = next(raw for _, _, line, _, raw in cells if line == "6")
    assert json.dumps(HOSTILE)[1:-1] in raw_of_6  # the row as read (JSON), shown as the text it is


def test_plots_are_drawn_and_read_out_on_hover(browser, opened):
    from selenium.webdriver.common.action_chains import ActionChains

    charts = browser.find_elements("css selector", "figure.chart svg")
    assert len(charts) >= 6
    for svg in charts:
        assert svg.size["width"] > 300 and svg.size["height"] > 120
    lines = _js(browser, "return Array.from(document.querySelectorAll('figure.chart polyline.series'))"
                         ".map(p => { const b = p.getBBox(); return [p.closest('figure').id, b.width, b.height]; });")
    drawn = {figure for figure, width, _ in lines if width > 100}
    assert {"chart-loss", "chart-learning-rate", "chart-grad-norm", "chart-tokens-per-second"} <= drawn
    bars = _js(browser, "return document.querySelectorAll('#chart-lengths rect.bar').length;")
    assert bars >= 2
    loss = browser.find_element("css selector", "#chart-loss svg")
    ActionChains(browser).move_to_element(loss).perform()
    readout = browser.find_element("css selector", "#chart-loss .readout")
    assert readout.is_displayed() and "loss:" in readout.text and "step" in readout.text


def test_hostile_text_is_shown_as_text(browser, opened):
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (no script from the data ran)
    assert _js(browser, "return document.images.length;") == 0
    text = browser.find_element("tag name", "body").text
    assert text.count('<script>alert("owned")</script>') >= 4  # recipe, quarantine, eval output, export, card
    assert HOSTILE in browser.find_element("id", "evaluation").text


@pytest.fixture(scope="module")
def large_run(kit_run, tmp_path_factory) -> RunDir:
    """The kit run with 100k metric rows and 10k quarantined rows (of four reasons, raw rows of ~1 kB)."""
    run = RunDir(tmp_path_factory.mktemp("large") / "run")
    shutil.copytree(kit_run.path, run.path)
    run.metrics_jsonl.write_text(metrics_lines(LARGE_METRICS))
    reasons = ["bad JSON: x", "message 2: unknown role 'bot'", "'messages' is not a list", "no trainable token"]
    with run.quarantine_jsonl.open("w") as fh:
        for row in range(1, LARGE_QUARANTINE + 1):
            fh.write(json.dumps({"card": "planted", "file": "/data/big.jsonl", "row": row,
                                 "reason": reasons[row % 4], "raw": {"text": "z" * 1000}}) + "\n")
    return run


def test_a_run_with_100k_metric_rows_and_10k_quarantined_rows_opens_fast_and_small(browser, large_run):
    started = time.perf_counter()
    page = write_report(large_run.path)
    written = time.perf_counter() - started
    size = page.stat().st_size
    assert size < 10 * 2**20, f"{size:,} bytes"
    started = time.perf_counter()
    seen = chromium.open_page(browser, page)
    opened = time.perf_counter() - started
    assert seen["load_ms"] < 2000 and opened < 2.0, (seen["load_ms"], opened)
    assert seen["console"] == [] and len(seen["requests"]) == 1
    points = _js(browser, "return JSON.parse(document.querySelector('#chart-loss script.chart-data').textContent)"
                          ".series[0].points.length;")
    assert points <= 602
    shown = _js(browser, "return document.querySelectorAll('table.quarantine-rows tbody tr').length;")
    assert 0 < shown <= 300 and "10,000 rows were quarantined" in browser.find_element("id", "data").text
    print(f"\n100k metric rows + 10k quarantined rows: report written in {written:.1f} s, {size / 2**20:.2f} MiB, "
          f"loaded in {seen['load_ms']:.0f} ms (driver.get {opened:.2f} s)")


def test_runs_side_by_side(browser, kit_run, tmp_path):
    other = RunDir(tmp_path / "other")
    shutil.copytree(kit_run.path, other.path)
    other.recipe_yaml.write_text(other.recipe_yaml.read_text().replace("learning_rate: 0.001",
                                                                       "learning_rate: 0.0005"))
    results = json.loads((other.eval / "math.json").read_text())
    results["modes"]["thinking"]["accuracy"] = 0.25
    (other.eval / "math.json").write_text(json.dumps(results))
    page = write_comparison([kit_run.path, other.path], tmp_path / "compare.html")
    seen = chromium.open_page(browser, page)
    assert seen["console"] == [] and seen["requests"] == [Path(page).resolve().as_uri()]
    series = _js(browser, "return document.querySelectorAll('#chart-loss polyline.series').length;")
    assert series == 4  # train and eval loss of each run
    differences = browser.find_element("css selector", "table.differences").text
    assert "train.learning_rate" in differences and "0.0005" in differences
    scores = browser.find_element("css selector", "table.score-deltas").text
    assert "accuracy" in scores and "-0.25" in scores
