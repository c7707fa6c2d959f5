"""A name list two modules need is defined once (torch-free, usually in registry.py) and imported; where a module
keeps its own copy (another owner's layer, a parser that must stay light), a test here holds the copies equal. The
last test finds new copies: two module constants or ``Literal`` types listing the same strings."""

from __future__ import annotations

import ast
import json
import re
import typing
from collections import defaultdict
from pathlib import Path

import yaml

from qwen35_tune import cli_parser, launch, plan, plan_memory, registry
from qwen35_tune.cards.schema import FORMAT_FIELDS, DataCard, HubSource
from qwen35_tune.recipe import eval_section, schema
from qwen35_tune.recipe.schema import ChatSection, ExportSection
from qwen35_tune.train.strategy_checks import SHARDED

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "qwen35_tune"


def _literal(model, field: str) -> tuple:
    """The strings a Literal field (or a list of one) accepts."""
    annotation = model.model_fields[field].annotation
    while typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)
    return typing.get_args(annotation)


def _choices(command: str, dest: str) -> tuple:
    """The choices argparse offers for one option of one subcommand."""
    parser = cli_parser.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if a.dest == dest).choices)


def test_tiny_kinds_have_one_home():
    from qwen35_tune.models import tiny

    assert schema.TINY_KINDS is registry.TINY_KINDS and tiny.TINY_KINDS is registry.TINY_KINDS
    assert schema.TINY_SCHEME is registry.TINY_SCHEME and tiny.TINY_SCHEME is registry.TINY_SCHEME
    assert _choices("make-tiny", "kind") == registry.TINY_KINDS


def test_fp32_parameters_and_fused_experts_have_one_home():
    from qwen35_tune.export import adapter_map, qlora
    from qwen35_tune.models import quantize, tiny

    assert tiny.FP32_PARAM_SUFFIXES is registry.FP32_PARAM_SUFFIXES
    assert plan_memory.FP32_PARAM_SUFFIXES is registry.FP32_PARAM_SUFFIXES
    assert all(spec.fp32_params == registry.FP32_PARAM_SUFFIXES for spec in registry.REGISTRY.values())
    assert quantize.EXPERT_PARAMS is registry.EXPERT_PARAMS
    assert adapter_map.FUSED_EXPERT_PIECES is registry.FUSED_EXPERT_PIECES is qlora.FUSED_EXPERT_PIECES
    assert registry.ROUTED_EXPERT_PARAMS == ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


def test_every_strategy_has_one_launch_config_and_the_plan_knows_it():
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in (launch.LAUNCH_DIR / "accelerate").glob("*.yaml")}
    assert set(configs) == set(launch.STRATEGIES)
    assert plan.STRATEGIES is launch.STRATEGIES
    deepspeed = {name for name, c in configs.items() if c["distributed_type"] == "DEEPSPEED"}
    assert deepspeed == set(plan_memory.DEEPSPEED)

    def shards_weights(config: dict) -> bool:
        if config["distributed_type"] == "FSDP":
            return True
        if config["distributed_type"] != "DEEPSPEED":
            return False
        stage = json.loads((REPO / config["deepspeed_config"]["deepspeed_config_file"]).read_text())
        return stage["zero_optimization"]["stage"] == 3

    assert {name for name, c in configs.items() if shards_weights(c)} == set(SHARDED)


def test_data_card_formats_and_hub_keys_agree():
    assert set(FORMAT_FIELDS) == set(_literal(DataCard, "format"))
    from qwen35_tune.cards.schema import HUB_ONLY

    assert HUB_ONLY == set(HubSource.model_fields)  # which keys make a source mapping a Hub source


def test_chat_train_on_choices_agree_with_the_renderer():
    from qwen35_tune.data.render import TrainOn

    assert typing.get_args(TrainOn) == _literal(ChatSection, "train_on")


def test_eval_modes_have_one_home_and_the_cli_offers_them():
    from qwen35_tune.eval import generate

    assert generate.MODES is eval_section.GENERATION_MODES
    assert _literal(eval_section.EvalSection, "modes") == eval_section.GENERATION_MODES
    assert _choices("eval", "mode") == (*eval_section.GENERATION_MODES, "both")


def test_qlora_merge_bases_agree():
    from qwen35_tune.export.qlora import QLORA_BASES

    assert _literal(ExportSection, "qlora_merge_base") == QLORA_BASES == _choices("merge", "qlora_base")


def test_eval_suite_tables_cover_the_same_suites():
    from qwen35_tune.eval import model_index, public_sets, suites

    assert set(suites.PRIMARY_METRIC) == set(suites.CARD_SUITES) == set(model_index.TASK_TYPES)
    assert set(suites.PUBLIC_SUITES) == set(public_sets.PUBLIC_SETS) == set(public_sets._CARDS)


def test_part_learning_rate_tables_agree():
    from qwen35_tune.recipe.vision_checks import LR_PRESETS, PART_NAMES, PartLearningRates

    assert set(LR_PRESETS) == set(PART_NAMES) == set(PartLearningRates.model_fields)
    assert all(set(presets) <= set(registry.ALL_PRESETS) for presets in LR_PRESETS.values())


def test_preset_names_are_the_registry_presets():
    assert set(registry.ALL_PRESETS) == {name for spec in registry.REGISTRY.values() for name in spec.presets}


def test_doctor_modeling_modules_are_the_registry_families():
    from qwen35_tune.doctor import _MODELING

    assert _MODELING == {model_type: f"transformers.models.{spec.family}.modeling_{spec.family}"
                         for model_type, spec in registry.REGISTRY.items()}  # fmt: skip


def _string_set(value) -> frozenset | None:
    values = list(value) if isinstance(value, (tuple, list, set, frozenset, dict)) else []
    if len(values) >= 2 and all(isinstance(v, str) for v in values):
        return frozenset(values)
    return None


def _name_lists() -> dict[frozenset, list[str]]:
    """Module-level UPPER_CASE constants (dict keys for dicts) and every Literal type, by the set of strings listed."""
    found: dict[frozenset, list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text())
        for node in tree.body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else getattr(
                node, "target", None)
            if isinstance(target, ast.Name) and re.fullmatch(r"_?[A-Z][A-Z0-9_]*", target.id) and node.value:
                try:
                    strings = _string_set(ast.literal_eval(node.value))
                except ValueError:
                    continue
                if strings:
                    found[strings].append(f"{where} {target.id}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
                try:
                    strings = _string_set(ast.literal_eval(node.slice))
                except ValueError:
                    continue
                if strings:
                    found[strings].append(f"{where}:{node.lineno} Literal")
    return found


# Name lists that are knowingly written twice, each with why; the tests above hold the copies equal.
KNOWN_COPIES = {
    frozenset(FORMAT_FIELDS): "card formats: FORMAT_FIELDS and DataCard.format (test_data_card_formats_...)",
    frozenset(("assistant_only", "final_turn_only", "all")): "chat.train_on in the schema and the renderer's type",
    frozenset(("dequantized", "original")): "export.qlora_merge_base and export/qlora.py (test_qlora_merge_bases)",
    frozenset(("math", "code", "translation", "qa")): "tables keyed by the card suites (test_eval_suite_tables_...)",
    frozenset(("human-eval", "champ")): "tables keyed by the public sets (test_eval_suite_tables_...)",
    frozenset(("no", "steps", "epoch")): "save_strategy and eval_strategy: two keys with the same choices",
    frozenset(("vision", "projector", "language_model")): "tables keyed by the model parts (test_part_learning_...)",
    frozenset(("5.2", "6")): "tested transformers ranges of two upstream hooks; each keeps its own (they may diverge)",
    frozenset(("vision", "projector")): "the parts frozen by default and the vision parts: the same two by meaning",
    frozenset(("adapter", "weights")): "run_layout.InitKind and the model card's words for each (test_init_kinds_...)",
}


def test_no_new_copies_of_name_lists():
    copies = {names: where for names, where in _name_lists().items() if len(where) > 1}
    unknown = {tuple(sorted(names)): where for names, where in copies.items() if names not in KNOWN_COPIES}
    assert not unknown, (
        f"the same names are listed in several places: {unknown}. Define the list once (torch-free: registry.py "
        "for model facts) and import it, or add it to KNOWN_COPIES with a test holding the copies equal."
    )


def test_init_kinds_each_have_the_model_cards_words():
    from typing import get_args

    from qwen35_tune.export.card import _STARTS
    from qwen35_tune.run_layout import InitKind

    assert set(_STARTS) == set(get_args(InitKind))
