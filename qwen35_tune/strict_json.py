"""JSON the project writes (metrics.jsonl, summary.json, data_stats.json, eval reports) is strict RFC 8259 JSON.

Python's ``json.dumps`` writes a non-finite float as the bare tokens ``NaN`` / ``Infinity``, which jq, JavaScript,
Go and most other readers reject, so one diverged loss would make a whole metrics file unreadable outside Python.
Here a non-finite number becomes ``null`` and the fact is kept next to it: ``nonfinite_keys`` says which dotted
keys held ``nan`` / ``inf`` / ``-inf``. No torch import (the CLI's light commands use it).
"""

from __future__ import annotations

import json
import math
from typing import Any


def _kind(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _number(value) -> float | None:
    """A float for float-like scalars (Python, numpy, 0-d tensors); None for anything else."""
    if isinstance(value, bool) or isinstance(value, (int, str)) or value is None:
        return None
    if isinstance(value, float):
        return value
    try:  # numpy floats and 0-d tensors
        if getattr(value, "shape", None) in ((), None) and hasattr(value, "item"):
            item = value.item()
            return item if isinstance(item, float) else None
    except (TypeError, ValueError, RuntimeError):
        return None
    return None


def finite_only(value: Any, path: str = "", found: dict[str, str] | None = None) -> tuple[Any, dict[str, str]]:
    """(``value`` with every non-finite float replaced by None, {dotted key: 'nan' | 'inf' | '-inf'})."""
    found = {} if found is None else found
    number = _number(value)
    if number is not None:
        if math.isfinite(number):
            return number, found
        found[path or "value"] = _kind(number)
        return None, found
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out[key] = finite_only(item, f"{path}.{key}" if path else str(key), found)[0]
        return out, found
    if isinstance(value, (list, tuple)):
        return [finite_only(item, f"{path}[{i}]", found)[0] for i, item in enumerate(value)], found
    return value, found


def dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` that never writes NaN/Infinity: such numbers become null (see ``finite_only``)."""
    clean, _ = finite_only(value)
    return json.dumps(clean, allow_nan=False, **kwargs)


def record_dumps(record: dict, **kwargs) -> str:
    """One metrics-style record as strict JSON; a non-finite value becomes null and is named in ``nonfinite_keys``."""
    clean, found = finite_only(record)
    if found:
        clean["nonfinite_keys"] = found
    return json.dumps(clean, allow_nan=False, **kwargs)
