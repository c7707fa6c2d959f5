"""The CLI's contract: exit 0 / 2 / 1, user errors without tracebacks, and no torch import for help/validate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qwen35_tune.cli import main

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "recipes/tiny/sft_lora.yaml"


def test_validate_ok(capsys):
    assert main(["validate", str(DEFAULT)]) == 0
    assert "tiny-sft-lora" in capsys.readouterr().out


def test_bad_recipe_exits_2_with_location_and_no_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT.read_text().replace("    r: 16\n", "    rank: 16\n").replace(
        "path: ../../data_cards/tiny_chat.yaml", f"path: {REPO}/data_cards/tiny_chat.yaml"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    line = bad.read_text().splitlines().index("    rank: 16") + 1
    assert f"bad.yaml:{line}" in err and "method.lora.rank" in err and "'r'" in err
    assert "Traceback" not in err


def test_bad_override_exits_2(capsys):
    assert main(["validate", str(DEFAULT), "train.max_steps=abc", "train.learning_rat=1"]) == 2
    err = capsys.readouterr().err
    assert "train.max_steps" in err and "train.learning_rat" in err and "learning_rate" in err


def test_missing_recipe_file_exits_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_merge_on_a_folder_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert main(["merge", str(tmp_path)]) == 2
    assert "run.json" in capsys.readouterr().err


def test_internal_error_exits_1(monkeypatch, capsys):
    import qwen35_tune.cli as cli

    def boom(args):
        raise RuntimeError("bug")

    monkeypatch.setitem(cli.COMMANDS, "validate", boom)
    assert main(["validate", str(DEFAULT)]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_help_validate_and_schema_do_not_import_torch():
    code = (
        "import sys\n"
        "from qwen35_tune.cli import main\n"
        f"assert main(['validate', {str(DEFAULT)!r}]) == 0\n"
        "for part in ([], ['train.extra'], ['train.optim'], ['card.source'], ['--format', 'json']):\n"
        "    assert main(['schema', *part]) == 0\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "qwen35_tune", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "qwen35-tune" in result.stdout
