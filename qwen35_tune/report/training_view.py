"""The training section: curves over steps (loss, learning rate, gradient norm, tokens/s, in-training eval and
every other logged metric), the preflight table of trainable parameters per group, and the end-of-run record."""

from __future__ import annotations

from qwen35_tune.report.series import TOKENS_PER_SECOND, MetricSeries, downsample
from qwen35_tune.report.svg import PALETTE, Line, fmt, line_chart

BUDGET = 600  # points drawn per curve (see series.downsample)
# Cumulative counters or per-round bookkeeping: not curves anyone reads.
SKIPPED = {"num_tokens", "total_flos"}
GEN_EVAL_SKIPPED = {"n", "truncated", "unfinished_think", "mean_new_tokens", "budget", "seconds"}


def _lines(series: MetricSeries, keys: list[str], dashed: set[str] = frozenset()) -> list[Line]:
    return [Line(key, downsample(series.points(key), BUDGET), PALETTE[i % len(PALETTE)], key in dashed)
            for i, key in enumerate(keys) if series.points(key)]


def _gen_eval_charts(series: MetricSeries) -> list:
    """One chart per suite: every metric of every mode logged by the in-training generation eval."""
    suites: dict[str, list[str]] = {}
    for key in series.steps:
        parts = key.split("/")
        if parts[0] == "gen_eval" and len(parts) == 4 and parts[3] not in GEN_EVAL_SKIPPED:
            suites.setdefault(parts[1], []).append(key)
    charts = []
    for suite, keys in sorted(suites.items()):
        lines = [Line(key.split("/", 2)[2], downsample(series.points(key), BUDGET), PALETTE[i % len(PALETTE)])
                 for i, key in enumerate(sorted(keys))]
        charts.append(line_chart(lines, title=f"in-training eval: {suite}", chart_id=f"chart-gen-eval-{suite}"))
    return charts


def training_charts(series: MetricSeries) -> list:
    """The charts of the training section, most important first."""
    charts = [line_chart(_lines(series, ["loss", "eval_loss"], {"eval_loss"}), title="loss", chart_id="chart-loss")]
    lr_keys = sorted(k for k in series.steps if k.startswith("learning_rate"))
    charts.append(line_chart(_lines(series, lr_keys), title="learning rate", chart_id="chart-learning-rate"))
    charts.append(line_chart(_lines(series, ["grad_norm"]), title="gradient norm", chart_id="chart-grad-norm"))
    charts.append(line_chart(_lines(series, [TOKENS_PER_SECOND]), title="tokens per second (real tokens, "
                             "between logged steps)", chart_id="chart-tokens-per-second"))
    charts += _gen_eval_charts(series)
    shown = {"loss", "eval_loss", "grad_norm", TOKENS_PER_SECOND, *lr_keys}
    for key in sorted(series.steps):
        if key in shown or key in SKIPPED or key.startswith("gen_eval/"):
            continue
        chart_id = "chart-" + "".join(c if c.isalnum() else "-" for c in key)
        charts.append(line_chart(_lines(series, [key]), title=key, chart_id=chart_id))
    return charts


def preflight_rows(preflight: dict) -> list[dict]:
    groups = dict(preflight.get("groups") or {})
    if preflight.get("total"):
        groups["total"] = preflight["total"]
    rows = []
    for group, row in groups.items():
        params, trainable = row.get("params", 0), row.get("trainable", 0)
        rows.append({"group": group, "params": f"{params:,}", "trainable": f"{trainable:,}",
                     "percent": f"{100 * trainable / params:.3f}" if params else "-",
                     "size": f"{row.get('trainable_bytes', 0) / 2**20:,.2f} MiB", "total": group == "total",
                     "untouched": group in (preflight.get("untouched") or [])})
    return rows


def training_view(series: MetricSeries, preflight: dict) -> dict:
    longest = max((len(v) for v in series.steps.values()), default=0)
    final = dict(series.final)
    tokens, runtime = series.last("num_tokens"), final.get("train_runtime")
    if tokens and isinstance(runtime, (int, float)) and runtime > 0:
        final["tokens per second (mean)"] = tokens / runtime
    return {"charts": training_charts(series) if series.steps else [],
            "preflight": preflight_rows(preflight), "untouched": preflight.get("untouched") or [],
            "preflight_title": f"{preflight.get('method', '')} on {preflight.get('model_type', '')}".strip(),
            "final": [(k, fmt(v) if isinstance(v, (int, float)) else str(v)) for k, v in final.items()],
            "rows": series.rows, "unreadable": series.unreadable, "longest": longest,
            "downsampled": longest > BUDGET, "budget": BUDGET}
