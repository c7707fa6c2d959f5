"""The run directory as one typed object (qwen35_tune/rundir.py): one list of its names for training, resume and lock;
run.json as a typed record (same bytes as before, bad ones a UserError); recipe.yaml re-read by the recipe loader
with the schema's defaults, and an old recipe this version refuses still read for export (warning), unless a key
export reads is itself refused (exit 2 naming file:line). Export, eval and infer never read the run directory past it.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe
from qwen35_tune.recipe.schema import ExportSection, QuantSection
from qwen35_tune.rundir import RunDir, RunRecord

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "qwen35_tune"
RECIPE = REPO / "recipes" / "tiny" / "sft_lora.yaml"
READERS = ("export", "eval", "infer", "report")  # what reads finished run directories, only through RunDir
YAML_READS = {"safe_load", "load", "full_load", "unsafe_load", "load_all", "safe_load_all"}


def _record(**changes) -> dict:
    return {"base_model": "tiny://dense", "base_path": "/models/dense", "method": "lora", "weights": "adapter",
            **changes}


def test_training_resume_and_lock_use_the_run_directory_names():
    from qwen35_tune.train import run_claim, run_lock

    assert run_claim.RUN_MARKERS is RunDir.MARKERS and run_claim.RUN_ARTIFACTS is RunDir.ARTIFACTS
    assert run_lock.LOCK_NAME == RunDir.lock.name
    assert set(RunDir.MARKERS) <= set(RunDir.ARTIFACTS) and RunDir.lock.name not in RunDir.ARTIFACTS
    run = RunDir(Path("/runs/x"))
    assert run.run_json == Path("/runs/x/run.json") and run.merged == Path("/runs/x/merged")
    assert RunDir.of("/runs/x") == run and RunDir.of(run) is run


def test_run_record_is_written_as_before_and_read_typed(tmp_path):
    run = RunDir(tmp_path)
    run.write_run(RunRecord(**_record()))
    written = run.run_json.read_text()
    assert written.startswith(json.dumps(_record(), indent=2)[:-2])  # the bytes train always wrote, in that order,
    assert json.loads(written) == {**_record(), "stage": "sft", "init_from": None, "init_kind": None, "stages": []}
    # then the stage and its chain (model.init_from), which older readers ignore
    again = RunDir(tmp_path)
    assert again.run == RunRecord(**_record()) and again.weights == tmp_path / "adapter" and again.is_finished()
    run.run_json.write_text(json.dumps(_record(written_by="a later version")))
    assert RunDir(tmp_path).run.method == "lora"  # fields a newer version adds do not block reading


@pytest.mark.parametrize(("text", "named"), [
    (json.dumps(_record(method="dpo")), "method"),
    (json.dumps({k: v for k, v in _record().items() if k != "weights"}), "weights"),
    ("{not json", "run.json"),
])  # fmt: skip
def test_a_bad_run_record_is_a_user_error_naming_the_field(tmp_path, text, named):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(UserError, match="not a readable run record") as err:
        _ = RunDir(tmp_path).run
    assert named in str(err.value) and str(tmp_path / "run.json") in str(err.value)
    with pytest.raises(UserError, match=r"no run\.json"):
        _ = RunDir(tmp_path / "elsewhere").run


def test_the_recipe_is_reloaded_by_the_recipe_loader_with_schema_defaults(tmp_path):
    recipe = load_recipe(RECIPE, ["method.kind=qlora", "export.verify=false"])
    run = RunDir(tmp_path)
    run.write_recipe(recipe)
    assert run.recipe == recipe
    view = run.view
    assert view.recipe == recipe and view.problem is None and view.dtype == "float32"
    assert view.export.verify is False and view.export.qlora_merge_base == "dequantized"
    assert view.quantization == QuantSection()  # kind: qlora without a section: the schema's defaults
    bare = RunDir(tmp_path / "by-hand").view  # a run directory without recipe.yaml
    assert bare.recipe is None and bare.export == ExportSection() and bare.quantization == QuantSection()
    assert bare.dtype == "auto"


def test_yaml_is_read_by_the_project_rules_not_yaml_1_1(tmp_path):
    """YAML 1.1 (yaml.safe_load) reads `verify: off` as false and would silently skip verification; the recipe
    loader's YAML 1.2 rules read the string 'off', which the schema refuses at its line."""
    (tmp_path / "recipe.yaml").write_text("export:\n  verify: off\n")
    with pytest.raises(UserError) as err:
        _ = RunDir(tmp_path).view
    text = str(err.value)
    assert "recipe.yaml:2 export.verify" in text and "Correct them in" in text


def test_an_old_recipe_this_version_refuses_is_still_read_for_export(tmp_path, caplog):
    """A bound tightened since the run trained (lora.r far above today's maximum) and a data card not on this
    machine: the recipe does not load, a warning names both, and export reads its own keys alone."""
    text = load_recipe(RECIPE, ["export.qlora_merge_base=original"]).to_yaml()
    text = text.replace("  r: 16\n", "  r: 1000000\n").replace(str(REPO / "data_cards"), "/gone/data_cards")
    assert "r: 1000000" in text and "/gone/data_cards" in text
    (tmp_path / "recipe.yaml").write_text(text)
    with caplog.at_level(logging.WARNING, logger="qwen35_tune.rundir"):
        view = RunDir(tmp_path).view
    assert view.recipe is None and view.dtype == "float32" and view.export.qlora_merge_base == "original"
    warned = caplog.text
    assert "method.lora.r" in warned and "data card not found" in warned and "read alone" in warned
    assert "method.lora.r" in view.problem


def test_a_refused_key_that_export_reads_stops_with_its_line(tmp_path):
    text = load_recipe(RECIPE).to_yaml().replace("  qlora_merge_base: dequantized\n", "  qlora_merge_base: both\n")
    (tmp_path / "recipe.yaml").write_text(text)
    line = text.splitlines().index("  qlora_merge_base: both") + 1
    with pytest.raises(UserError) as err:
        _ = RunDir(tmp_path).view
    assert f"recipe.yaml:{line} export.qlora_merge_base" in str(err.value)
    assert "Correct them in" in str(err.value) and "version that trained the run" in str(err.value)


def direct_reads(path: Path, names: set[str]) -> list[str]:
    """``file:line: what`` for every run-directory file name written as a string, and every YAML read, in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            found.append(f"{path}:{node.lineno}: '{node.value}' (use RunDir)")
        elif isinstance(node, ast.Attribute) and node.attr in YAML_READS and ast.unparse(node.value) == "yaml":
            found.append(f"{path}:{node.lineno}: {ast.unparse(node)} (the recipe loader reads YAML: RunDir.recipe)")
        elif isinstance(node, ast.ImportFrom) and node.module == "yaml":
            found += [f"{path}:{node.lineno}: from yaml import {a.name}" for a in node.names if a.name in YAML_READS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qwen35_tune.recipe"):
            found += [f"{path}:{node.lineno}: {a.name} (RunDir.recipe)" for a in node.names if a.name == "load_recipe"]
    return found


def _run_dir_names() -> set[str]:
    """Names of the run directory's own files and folders that say nothing else ('model', 'eval' and 'adapter' are
    also words of the code: kinds of source, suites)."""
    entries = [v.name for cls in RunDir.__mro__ for v in vars(cls).values() if type(v).__name__ == "_Entry"]
    return {name for name in entries if "." in name or name in ("merged", "checkpoints", "adapter_export")}


def test_export_eval_infer_and_report_read_the_run_directory_only_through_rundir():
    names = _run_dir_names()
    assert {"run.json", "recipe.yaml", "summary.json", "data_stats.json", "merged"} <= names
    files = [p for folder in READERS for p in sorted((PACKAGE / folder).rglob("*.py"))]
    found = [hit for path in files for hit in direct_reads(path, names)]
    assert not found, "read the run directory through qwen35_tune.rundir.RunDir:\n" + "\n".join(found)


def test_the_direct_read_check_finds_each_kind(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import json, yaml\nfrom yaml import safe_load\nfrom qwen35_tune.recipe import load_recipe\n"
                      "def f(d):\n    json.loads((d / 'run.json').read_text())\n"
                      "    return yaml.safe_load((d / 'recipe.yaml').read_text()), d / 'merged'\n")
    found = direct_reads(module, _run_dir_names())
    assert sorted(int(hit.split(":")[1]) for hit in found) == [2, 3, 5, 6, 6, 6], found


def test_what_training_writes_into_the_run_directory_is_listed_there():
    """`train --overwrite` removes exactly RunDir.ARTIFACTS: a file written as ``run_dir / "name"`` in train/ or data/
    that is not listed would survive into the next run."""
    written = {}
    for path in sorted([*(PACKAGE / "train").rglob("*.py"), *(PACKAGE / "data").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                    and ast.unparse(node.left).endswith("run_dir") and isinstance(node.right.value, str):
                written.setdefault(node.right.value, f"{path.relative_to(REPO)}:{node.lineno}")
    assert {"summary.json", "metrics.jsonl", "data_stats.json", "preflight.json"} <= set(written)
    unlisted = {name: where for name, where in written.items() if name not in RunDir.ARTIFACTS}
    assert not unlisted, f"add these to RunDir (and ARTIFACTS): {unlisted}"
