"""The run report without a browser: downsampling keeps spikes, metrics and quarantine files are read in bounded
memory and page size, the recipe's provenance is recorded at train time and shown per key, everything taken from the
run is escaped, the page says how a run ended, train's hook never fails or hides a run, and the CLI's report
command. (tests/smoke/test_report_browser.py opens the pages in Chromium.)"""

from __future__ import annotations

import json
import logging
import random
import shutil
from html.parser import HTMLParser
from importlib import resources

import pytest

from qwen35_tune.cli import main
from qwen35_tune.data.build import length_histogram
from qwen35_tune.recipe import load_recipe
from qwen35_tune.recipe.provenance import value_origins
from qwen35_tune.report.environment import launch_strategy
from qwen35_tune.report.hook import report_on_exit
from qwen35_tune.report.page import write_report
from qwen35_tune.report.quarantine_sample import MAX_TABLE, sample_quarantine
from qwen35_tune.report.series import TOKENS_PER_SECOND, downsample, read_series
from qwen35_tune.rundir import RunDir
from tests.unit.report_kit import BAD_LINES, make_run, write_card, write_recipes


@pytest.fixture(scope="module")
def kit_run(tmp_path_factory, tiny_tokenizer) -> RunDir:
    return make_run(tmp_path_factory.mktemp("report-kit"), tiny_tokenizer)


@pytest.fixture
def run_copy(kit_run, tmp_path) -> RunDir:
    """A copy of the kit run to change (the base model folder the export names stays where it is)."""
    shutil.copytree(kit_run.path, tmp_path / "run")
    return RunDir(tmp_path / "run")


def test_downsampling_keeps_every_bucket_extreme_and_the_ends():
    rng = random.Random(0)
    points = [(step, rng.gauss(1.0, 0.1)) for step in range(100_000)]
    points[61_234] = (61_234, 50.0)  # one loss spike
    points[7_777] = (7_777, -3.0)
    kept = downsample(points, 600)
    assert len(kept) <= 602 and kept[0] == points[0] and kept[-1] == points[-1]
    assert (61_234, 50.0) in kept and (7_777, -3.0) in kept
    assert [x for x, _ in kept] == sorted(x for x, _ in kept)
    assert downsample(points[:10], 600) == points[:10]


def test_metrics_are_read_into_series_with_tokens_per_second(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "time": 100.0 + 2 * s, "loss": 1.0 / s, "num_tokens": 1000.0 * s, "learning_rate": 0.1}
            for s in range(1, 6)]
    rows.append({"step": 5, "train_runtime": 10.0, "train_loss": 0.4})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "loss"')  # a torn last line
    series = read_series(path)
    assert series.points("loss")[0] == (1.0, 1.0) and len(series.points("loss")) == 5
    assert series.points(TOKENS_PER_SECOND) == [(float(s), 500.0) for s in range(2, 6)]  # 1000 tokens / 2 s
    assert series.final == {"train_runtime": 10.0, "train_loss": 0.4} and series.unreadable == 1
    assert "time" not in series.steps and "step" not in series.steps


def test_each_recipe_value_names_the_file_line_or_override_that_set_it(tmp_path):
    write_card(tmp_path)
    recipe = load_recipe(write_recipes(tmp_path), ["train.max_steps=7", "eval.limit=3"])
    origins = value_origins(recipe)
    base, child = (tmp_path / "base.yaml").read_text().splitlines(), (tmp_path / "child.yaml").read_text().splitlines()
    assert origins["train.learning_rate"]["line"] == base.index("  learning_rate: 1.0e-3") + 1
    assert origins["train.learning_rate"]["path"] == str(tmp_path / "base.yaml")
    assert origins["data.cards.0.weight"]["line"] == child.index("      weight: 2.0") + 1
    assert origins["chat.enable_thinking"]["line"] == child.index("  thinking: true") + 1  # the alias as written
    assert origins["name"]["path"] == str(tmp_path / "child.yaml")  # the child's value wins over the base's
    assert origins["train.max_steps"] == {"override": "train.max_steps=7"}
    assert origins["eval.limit"] == {"override": "eval.limit=3"}
    for default in ("train.warmup_steps", "eval.modes", "data.cards.0.max_samples", "method.lora.lora_alpha"):
        assert default not in origins, default


def test_the_run_directory_keeps_the_provenance_with_the_recipe(tmp_path):
    write_card(tmp_path)
    recipe = load_recipe(write_recipes(tmp_path), ["train.max_steps=7"])
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_recipe(recipe)
    assert run.value_origins() == json.loads(json.dumps(value_origins(recipe)))
    assert run.value_origins()["train.max_steps"] == {"override": "train.max_steps=7"}
    assert {"recipe_origins.json", "environment.json", "report.html"} <= set(RunDir.ARTIFACTS)


def test_length_histogram_has_power_of_two_bins_and_counts_every_row():
    lengths = [1, 5, 64, 65, 700, 4095, 4096]
    hist = length_histogram(lengths)
    width = hist["bin_width"]
    assert width & (width - 1) == 0 and len(hist["counts"]) <= 64 and sum(hist["counts"]) == len(lengths)
    assert hist["counts"][4096 // width] >= 1
    assert length_histogram([]) == {}


def test_a_huge_quarantine_is_counted_in_full_and_sampled_for_the_page(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    with path.open("w") as fh:
        for row in range(1, 10_001):
            reason = "bad JSON: x" if row % 100 else f"message {row % 7}: unknown role 'bot'"
            fh.write(json.dumps({"card": "c", "file": "/d/f.jsonl", "row": row, "reason": reason,
                                 "raw": {"text": "y" * 2000}}) + "\n")
    sample = sample_quarantine(path)
    assert sample.total == 10_000 and len(sample.rows) <= MAX_TABLE
    reasons = {r["reason"]: r for r in sample.reasons()}
    assert reasons["bad JSON"]["count"] == 9_900 and reasons["unknown role"]["count"] == 100
    assert [e["row"] for e in reasons["unknown role"]["examples"]] == [100, 200, 300]
    assert any(r["reason"].endswith("unknown role 'bot'") for r in sample.rows)  # every reason in the table
    assert all(len(r["raw"]) <= 301 for r in sample.rows)


@pytest.mark.parametrize(("env", "words"), [
    ({}, "single process"),
    ({"WORLD_SIZE": "8"}, "DDP"),
    ({"WORLD_SIZE": "8", "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
     "DeepSpeed ZeRO-3"),
    ({"WORLD_SIZE": "4", "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, "FSDP2"),
])  # fmt: skip
def test_the_launch_strategy_is_named(env, words):
    assert launch_strategy(env) == words


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside each <script>."""

    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if tag == "script":
            self.scripts.append([dict(attrs), ""])

    def handle_endtag(self, tag):
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1][1] += data


def test_text_from_the_run_is_escaped_never_markup(kit_run):
    """HOSTILE (a <script>, an <img> to the network, <b>) is in a data row, a quarantined row, the recipe, an eval
    output, the verify report and the model card: the page holds it as text everywhere."""
    html = write_report(kit_run.path).read_text()
    assert html.count('alert("owned")') == 0 and "&lt;script&gt;alert(" in html
    parsed = _Elements()
    parsed.feed(html)
    js = resources.files("qwen35_tune.report").joinpath("assets", "report.js").read_text()
    for attrs, text in parsed.scripts:  # only ours: the page script and chart data (not executed)
        assert attrs.get("type") == "application/json" or text == js, (attrs, text[:80])
    assert not [t for t, _ in parsed.tags if t in ("img", "iframe", "object", "embed", "link")]
    assert not [(t, a) for t, a in parsed.tags for k in a if k.startswith("on")]
    assert not [(t, a) for t, a in parsed.tags if str(a.get("href", "")).startswith(("javascript", "http"))
                and t != "a"]
    policy = next(a["content"] for t, a in parsed.tags if t == "meta" and a.get("http-equiv") ==
                  "Content-Security-Policy")
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]


def test_the_page_shows_what_the_run_directory_holds(kit_run):
    html = write_report(kit_run.path).read_text()
    for section in ("summary", "recipe", "data", "training", "evaluation", "export", "environment"):
        assert f'<section id="{section}"' in html
    for line in BAD_LINES:
        assert f'<td class="num">{line}</td>' in html  # the quarantine table names each planted row's line
    assert "child.yaml:" in html and "base.yaml:" in html and "train.max_steps=7" in html
    assert 'data-kinds="thinking"' in html and 'data-kinds="tool"' in html
    assert "b.weight" in html and "F16" in html  # the dtype the export changed against the base
    assert "0123abcd" in html and "single process" in html
    assert 'id="chart-loss"' in html and 'id="chart-tokens-per-second"' in html and 'id="chart-lengths"' in html


def _status(run: RunDir, failure=None) -> str:
    from qwen35_tune.report.page import run_page

    return run_page(run.path, failure).split('<span class="badge ', 1)[1].split('"', 1)[0]


def test_a_run_that_did_not_finish_still_gets_a_page_that_says_so(run_copy):
    assert _status(run_copy) == "finished"
    run_copy.run_json.unlink()
    assert _status(run_copy) == "stopped" and "--resume auto" in write_report(run_copy.path).read_text()
    run_copy.summary_json.unlink()
    assert _status(run_copy) == "incomplete"
    run_copy.data_stats_json.write_text(json.dumps({"cards": [], "error": "card 'x': 90% bad rows"}))
    assert _status(run_copy) == "failed"
    assert _status(run_copy, RuntimeError("boom")) == "failed" and "failed: boom" in \
        write_report(run_copy.path, failure=RuntimeError("boom")).read_text()


def test_train_writes_the_report_however_the_run_ends_and_never_because_of_it(run_copy, monkeypatch, caplog):
    with report_on_exit(run_copy.path):
        pass
    assert "finished: weights saved" in run_copy.report_html.read_text()
    environment = run_copy.environment()
    assert environment["launch_strategy"] == "single process" and environment["packages"]["torch"]
    with pytest.raises(RuntimeError, match="boom"), report_on_exit(run_copy.path):
        raise RuntimeError("boom")
    assert "failed: boom" in run_copy.report_html.read_text()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("qwen35_tune.report.page.write_report", broken)
    with caplog.at_level(logging.WARNING, logger="qwen35_tune.report.hook"):
        with report_on_exit(run_copy.path):  # the run's result stands
            pass
        with pytest.raises(ValueError, match="the training error"), report_on_exit(run_copy.path):
            raise ValueError("the training error")  # not replaced by the report's failure
    assert caplog.text.count("run report not written (OSError") == 2 and "qwen35-tune report" in caplog.text


def test_report_command_writes_one_page_or_compares_runs(run_copy, kit_run, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "not a qwen35-tune run directory" in capsys.readouterr().err
    assert main(["report", str(run_copy.path)]) == 0 and run_copy.report_html.exists()
    text = run_copy.recipe_yaml.read_text().replace("learning_rate: 0.001", "learning_rate: 0.002")
    run_copy.recipe_yaml.write_text(text)
    results = json.loads((run_copy.eval / "math.json").read_text())
    results["modes"]["thinking"]["accuracy"] = 0.75
    (run_copy.eval / "math.json").write_text(json.dumps(results))
    out = tmp_path / "compare.html"
    assert main(["report", str(kit_run.path), str(run_copy.path), "--out", str(out)]) == 0
    html = out.read_text()
    assert "train.learning_rate" in html and "0.002" in html and "+0.25" in html
    assert "train.max_steps" not in html.split('id="recipe-differences"')[1].split("</section>")[0]
