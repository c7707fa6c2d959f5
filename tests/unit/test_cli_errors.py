"""Every kind of recipe mistake exits 2 through the CLI with file:line and key path, and never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qwen35_tune.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "recipes"
# fixture -> (file the problem must be reported in, key path that must be named)
BAD = {
    "unknown_key.yaml": ("unknown_key.yaml", "method.lora.rank"),
    "wrong_type.yaml": ("wrong_type.yaml", "train.max_steps"),
    "missing_card.yaml": ("missing_card.yaml", "data.cards[1].path"),
    "extends_bad_parent.yaml": ("bad_parent.yaml", "train.learning_rat"),
    "cycle_a.yaml": ("cycle_b.yaml", "extends"),
    "extends_missing.yaml": ("extends_missing.yaml", "extends"),
    "bad_card.yaml": ("bad_key.yaml", "licence"),
    "syntax_error.yaml": ("syntax_error.yaml", "YAML syntax error"),
    "many_errors.yaml": ("many_errors.yaml", "method.lora.rank"),
}


@pytest.mark.parametrize("fixture", sorted(BAD))
def test_bad_recipe_exits_2_with_file_line_and_key(fixture, capsys):
    assert main(["validate", str(FIXTURES / fixture)]) == 2
    err = capsys.readouterr().err
    file, key = BAD[fixture]
    assert re.search(rf"{re.escape(file)}:\d+ ", err), err
    assert key in err
    assert "Traceback" not in err


def test_many_errors_are_all_reported(capsys):
    assert main(["validate", str(FIXTURES / "many_errors.yaml")]) == 2
    err = capsys.readouterr().err
    assert "8 problems" in err
    assert len(re.findall(r"many_errors\.yaml:\d+ ", err)) >= 3
