"""Every JSON file the project writes is strict JSON: a NaN/inf value becomes null and is named, never a bare token
that jq, JavaScript or Go refuse."""

from __future__ import annotations

import json
import math

import pytest

from qwen35_tune.strict_json import dumps, finite_only, record_dumps


def strict_loads(text: str):
    """json.loads that refuses NaN / Infinity, as every non-Python reader does."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_and_are_named():
    record = {"step": 3, "loss": float("nan"), "grad_norm": float("inf"), "lr": 1e-4,
              "nested": {"x": [1.0, float("-inf")]}}
    clean, found = finite_only(record)
    assert clean == {"step": 3, "loss": None, "grad_norm": None, "lr": 1e-4, "nested": {"x": [1.0, None]}}
    assert found == {"loss": "nan", "grad_norm": "inf", "nested.x[1]": "-inf"}
    parsed = strict_loads(record_dumps(record))
    assert parsed["loss"] is None and parsed["nonfinite_keys"]["loss"] == "nan"
    assert strict_loads(dumps(record, indent=2))["nested"]["x"] == [1.0, None]


def test_numpy_and_tensor_scalars():
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    parsed = strict_loads(record_dumps({"a": np.float32("nan"), "b": torch.tensor(float("inf")), "c": np.float64(2.5),
                                        "flag": True, "n": 7}))  # fmt: skip
    assert parsed["a"] is None and parsed["b"] is None and parsed["c"] == 2.5
    assert parsed["flag"] is True and parsed["n"] == 7
    assert parsed["nonfinite_keys"] == {"a": "nan", "b": "inf"}


def test_metrics_file_callback_writes_strict_json(tmp_path):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from qwen35_tune.train.callbacks import MetricsFileCallback, plot_metrics

    path = tmp_path / "metrics.jsonl"
    callback = MetricsFileCallback(path)
    state = TrainerState()
    state.global_step, state.epoch = 2, 0.5
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    callback.on_log(args, state, TrainerControl(), logs={"loss": float("nan"), "grad_norm": math.inf, "num_tokens": 9})
    state.global_step = 3
    callback.on_log(args, state, TrainerControl(), logs={"loss": 1.5, "learning_rate": 1e-3})
    rows = [strict_loads(line) for line in path.read_text().splitlines()]
    assert rows[0]["loss"] is None and rows[0]["nonfinite_keys"] == {"loss": "nan", "grad_norm": "inf"}
    assert rows[1]["loss"] == 1.5 and "nonfinite_keys" not in rows[1]
    assert plot_metrics(path, tmp_path / "m.png") is not None  # null losses are skipped, not a TypeError
