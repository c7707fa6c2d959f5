"""Eval runner pieces without a forward pass: suite names, scoring routes, held-out rows = build_datasets' eval rows,
decontamination report, model-index metadata, the recipe's eval section, and when the training callback fires."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from qwen35_tune.errors import RecipeError, UserError
from qwen35_tune.eval.generate import Generation, opens_think, split_reasoning
from qwen35_tune.eval.rows import EvalRow, contaminated, held_out_rows
from qwen35_tune.eval.suites import parse_suite, score_output, summarize
from qwen35_tune.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
COT_MATH = REPO / "recipes" / "tiny" / "cot_math.yaml"


def test_suite_names():
    assert parse_suite("math").kind == "math" and parse_suite("math").public is None
    assert (parse_suite("human-eval").kind, parse_suite("human-eval").public) == ("code", "human-eval")
    assert (parse_suite("champ").kind, parse_suite("champ").primary_metric) == ("math", "accuracy")
    assert (parse_suite("lm-eval:gsm8k").kind, parse_suite("lm-eval:gsm8k").public) == ("lm-eval", "gsm8k")
    for bad in ("mathematics", "lm-eval:", ""):
        with pytest.raises(UserError, match="unknown eval suite"):
            parse_suite(bad)


def test_recipe_eval_section_is_checked_at_validate_time():
    recipe = load_recipe(COT_MATH, ["eval.every_n_steps=3", "eval.modes=[thinking,non-thinking]"])
    assert recipe.eval.suites == ["math"] and recipe.eval.every_n_steps == 3 and recipe.eval.at_start
    with pytest.raises(RecipeError, match=r"eval\.suites.*unknown eval suite 'maths'"):
        load_recipe(COT_MATH, ["eval.suites=[maths]"])
    with pytest.raises(RecipeError, match=r"eval\.modes"):
        load_recipe(COT_MATH, ["eval.modes=[thinkin]"])


def test_split_reasoning_takes_the_answer_after_think_and_none_from_an_unfinished_think():
    assert split_reasoning("a = 2\n</think>\n\nThe answer is 2.", True) == ("a = 2", "The answer is 2.")
    assert split_reasoning("still thinking 3", True) == ("still thinking 3", None)  # the prompt opened <think>
    assert split_reasoning("still thinking 3") == ("", "still thinking 3")  # non-thinking: all of it is the answer
    assert split_reasoning("<think>x = 3", False) == ("x = 3", None)  # the output opened it itself
    assert split_reasoning("<think>x</think>3") == ("x", "3")
    assert opens_think("<|im_start|>assistant\n<think>\n") and not opens_think("assistant\n<think>\n\n</think>\n\n")


def test_outputs_cut_off_inside_think_are_not_extractable(tiny_tokenizer):
    """Budget hit mid-thought: the numbers (or code) in the reasoning are not counted as extracted answers."""
    from qwen35_tune.eval.generate import decode_generation

    prompt = "<|im_start|>user\nWhat is 7 + 73?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    ids = tiny_tokenizer("so 7 + 73 = 80, the answer is 80", add_special_tokens=False)["input_ids"]
    cut = decode_generation(tiny_tokenizer, ids, eos=[-1], pad=-2, budget=len(ids), think_open=opens_think(prompt))
    assert cut.unfinished_think and cut.answer == "" and cut.truncated and "80" in cut.reasoning
    row = _row(reference="80", gold="80", tests=["assert True"])
    math, qa = score_output("math", cut.answer, cut.text, row), score_output("qa", cut.answer, cut.text, row)
    code = score_output("code", "", "```python\nx = 1\n```", row)  # code only inside the reasoning
    assert [s.verdict for s in (math, qa, code)] == ["no-answer"] * 3
    finished = Generation(text="x</think>The answer is 80.", answer="The answer is 80.", new_tokens=9,
                          truncated=False)
    metrics = summarize("math", [math, score_output("math", finished.answer, finished.text, row)], [cut, finished])
    assert metrics["extractable"] == 0.5 and metrics["accuracy"] == 0.5 and metrics["unfinished_think"] == 1


def _row(**kw) -> EvalRow:
    return EvalRow(prompt=[{"role": "user", "content": "q"}], origin="t:1", **kw)


def test_math_scoring_uses_gold_column_and_extraction():
    row = _row(reference="Ana has 80 apples. The answer is 80.", gold="80")
    assert score_output("math", "The answer is 80.", "...", row).verdict == "correct"
    wrong = score_output("math", "The answer is 81.", "...", row)
    assert (wrong.verdict, wrong.extracted, wrong.correct) == ("wrong", "81", False)
    assert score_output("math", "", "no digits at all", row).verdict == "no-answer"
    # without a gold column the card's own final answer is extracted
    assert score_output("math", "#### 80", "", _row(reference="so \\boxed{80}")).correct


def test_code_scoring_runs_the_tests_in_the_sandbox():
    row = _row(tests=["assert add(2, 3) == 5"])
    good = score_output("code", "```python\ndef add(a, b):\n    return a + b\n```", "", row)
    bad = score_output("code", "```python\ndef add(a, b):\n    return a - b\n```", "", row)
    assert (good.verdict, good.correct) == ("passed", True)
    assert (bad.verdict, bad.correct) == ("failed", False)
    assert score_output("code", "no code here", "no code", row).verdict == "no-answer"


def test_summarize_reports_accuracy_and_extractable_share():
    row = _row(gold="4")
    gens = [SimpleNamespace(truncated=t, new_tokens=5) for t in (False, True, False)]
    scored = [score_output("math", a, a, row) for a in ("The answer is 4.", "The answer is 5.", "none")]
    metrics = summarize("math", scored, gens)
    assert metrics["accuracy"] == pytest.approx(1 / 3) and metrics["extractable"] == pytest.approx(2 / 3)
    assert metrics["n"] == 3 and metrics["truncated"] == 1 and metrics["verdicts"]["no-answer"] == 1


def test_held_out_rows_are_exactly_the_rows_training_held_out(tiny_tokenizer):
    from qwen35_tune.data.build import build_datasets

    recipe = load_recipe(COT_MATH, ["data.cards.0.eval_fraction=0.25"])
    _, eval_ds, stats = build_datasets(recipe, tiny_tokenizer)
    held = held_out_rows(recipe, tiny_tokenizer)["cot_arithmetic"]
    assert len(held) == stats["eval_rows"] == len(eval_ds) == 15
    for row, ids in zip(held, eval_ds["input_ids"], strict=True):
        assert row.prompt[-1]["content"] in tiny_tokenizer.decode(ids)
        assert row.gold is not None and row.gold in row.reference  # the card's 'check' column


def test_contamination_report_separates_exact_copies_from_template_overlap(tmp_path):
    rows = [json.loads(line) for line in (REPO / "data_cards/data/cot_arithmetic.jsonl").read_text().splitlines()]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    (tmp_path / "eval.jsonl").write_text(json.dumps(rows[3]) + "\n" + json.dumps(rows[40]) + "\n")
    for name in ("train", "eval"):
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\nlicense: mit\nsource:\n  path: {name}.jsonl\n"
                                               "format: cot\n")
    recipe = load_recipe(COT_MATH, [f"data.cards.0.path={tmp_path / 'train.yaml'}", "data.cards.0.eval_fraction=0"])
    from qwen35_tune.cards.load import load_card
    from qwen35_tune.eval.rows import card_rows

    eval_rows = card_rows(load_card(tmp_path / "eval.yaml"))
    report = contaminated(eval_rows, recipe)
    assert report["exact"] == ["eval:eval.jsonl:1"]  # row 3 of the training file, copied
    assert "eval:eval.jsonl:1" in report["ngram"]


def test_eval_results_become_model_index(tmp_path):
    from huggingface_hub import ModelCard, ModelCardData

    from qwen35_tune.eval.model_index import eval_results

    (tmp_path / "eval").mkdir()
    report = {"suite": "math", "kind": "math", "primary_metric": "accuracy", "rows_from": "held-out rows of x",
              "modes": {"thinking": {"accuracy": 0.625, "n": 8, "budget": 64},
                        "non-thinking": {"accuracy": 0.25, "n": 8, "budget": 64}}}
    (tmp_path / "eval" / "math.json").write_text(json.dumps(report))
    results = eval_results(tmp_path)
    assert sorted((r.task_name, r.metric_type, r.metric_value) for r in results) == [
        ("math (non-thinking)", "accuracy", 0.25), ("math (thinking)", "accuracy", 0.625)]
    card = ModelCard(f"---\n{ModelCardData(model_name='m', eval_results=results).to_yaml()}\n---\n")
    assert "model-index" in str(card) and {r.metric_value for r in ModelCard(str(card)).data.eval_results} == {
        0.625, 0.25}


class _Handler:
    def __init__(self):
        self.logged = []

    def on_log(self, args, state, control, logs):
        self.logged.append((state.global_step, dict(logs)))
        return control


def test_callback_fires_at_start_every_n_steps_and_end(tmp_path, monkeypatch):
    from qwen35_tune.eval import runner
    from qwen35_tune.train.eval_callback import GenerationEvalCallback

    calls = []

    def fake_run_suite(model, tokenizer, suite, rows, **kw):
        calls.append(kw)
        return {"thinking": {"accuracy": 0.5, "n": len(rows), "budget": kw["max_new_tokens"]}}, []

    monkeypatch.setattr(runner, "run_suite", fake_run_suite)
    recipe = load_recipe(COT_MATH, ["eval.every_n_steps=2", "eval.max_new_tokens=7"])
    handler = _Handler()
    trainer = SimpleNamespace(args=None, control=None, callback_handler=handler)
    callback = GenerationEvalCallback(recipe, tmp_path, [(parse_suite("math"), [_row(gold="1")], "x", None)], trainer)
    state = SimpleNamespace(global_step=0, max_steps=5, is_world_process_zero=True)
    callback.on_train_begin(None, state, None)
    for step in range(1, 6):
        state.global_step = step
        callback.on_step_end(None, state, None)
    callback.on_train_end(None, state, None)
    assert [step for step, _ in handler.logged] == [0, 2, 4, 5]
    assert handler.logged[-1][1]["gen_eval/math/thinking/accuracy"] == 0.5
    assert all(kw["max_new_tokens"] == 7 for kw in calls) and len(calls) == 4
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "history.jsonl", "math.json", "math.samples.jsonl", "step_000000", "step_000002", "step_000004",
        "step_000005"]
    assert json.loads((tmp_path / "eval" / "math.json").read_text())["step"] == 5


def test_translation_and_qa_scoring():
    gens = [SimpleNamespace(truncated=False, new_tokens=4)] * 2
    rows = [_row(reference="Le chat dort sur le canapé."), _row(reference="Il pleut depuis ce matin.")]
    perfect = summarize("translation", [score_output("translation", r.reference, "", r) for r in rows], gens)
    poor = summarize("translation", [score_output("translation", "xyz", "", r) for r in rows], gens)
    assert perfect["chrf"] > 99 and poor["chrf"] < 10 and perfect["bleu"] > poor["bleu"]
    choice = _row(choices=["Paris", "Lyon", "Nice"], gold="Paris")
    assert score_output("qa", "Paris", "", choice).correct
    assert not score_output("qa", "Lyon", "", choice).correct
    assert score_output("qa", "  paris ", "", _row(reference="Paris")).verdict == "correct"


def test_rank_shares_cover_every_row_once_in_order():
    from qwen35_tune.eval.ranks import RankGroup

    for world in (1, 2, 3, 4):
        for n in range(0, 11):
            rows = list(range(n))
            shares = [RankGroup(rank, world).share(rows) for rank in range(world)]
            assert [row for share in shares for row in share] == rows
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def _run_dir(tmp_path: Path, recipe_path: Path, overrides: list[str]) -> Path:
    """A finished run directory (resolved recipe, run.json, a merged folder) whose weights must never be read."""
    run = tmp_path / "run"
    (run / "merged").mkdir(parents=True)
    (run / "merged" / "config.json").write_text("{}")
    (run / "recipe.yaml").write_text(load_recipe(recipe_path, overrides).to_yaml())
    (run / "run.json").write_text(json.dumps({"base_model": "tiny://dense", "base_path": str(tmp_path / "none"),
                                              "method": "lora", "weights": "adapter"}))
    return run


@pytest.mark.parametrize(("recipe", "overrides", "suite", "named"), [
    (COT_MATH, ["data.cards.0.eval_fraction=0", "eval.suites=[]"], "math",
     ["cot_arithmetic (data.cards.0)", "data.cards.0.eval_fraction=0.05", "--card"]),
    (REPO / "recipes" / "tiny" / "sft_lora.yaml", [], "code", ["tiny_chat (general)", "--card"]),
])
def test_eval_without_held_out_rows_stops_before_loading_anything(tmp_path, monkeypatch, capsys, recipe, overrides,
                                                                  suite, named):
    from qwen35_tune.cli import main
    from qwen35_tune.models import load

    def no_load(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the eval rows were checked")

    monkeypatch.setattr(load, "load_model", no_load)
    monkeypatch.setattr(load, "load_tokenizer", no_load)
    assert main(["eval", str(_run_dir(tmp_path, recipe, overrides)), "--suite", suite]) == 2
    err = capsys.readouterr().err
    assert all(text in err for text in named), err
