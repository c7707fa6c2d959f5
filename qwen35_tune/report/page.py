"""Views rendered to one self-contained HTML file: Jinja2 templates with autoescaping (every value from a run, a
data row or a recipe is text, never markup), the stylesheet and script inlined, and a Content-Security-Policy that
forbids loading anything (the script is allowed by its hash)."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path

from qwen35_tune.rundir import RunDir

SECTIONS = (("summary", "Summary"), ("recipe", "Recipe"), ("data", "Data"), ("training", "Training"),
            ("evaluation", "Evaluation"), ("export", "Export"), ("environment", "Environment"))
COMPARED = ("model", "method", "steps", "wall time", "final loss", "evaluation")  # summary lines side by side
VERIFY_ROWS = (("max_abs_logit_diff", "max |logit difference| from the trained model"),
               ("atol", "allowed"), ("rounding_logit_diff", "of which rounding to the stored dtype"),
               ("merged_vs_expected_logit_diff", "export vs the correctly rounded merge"),
               ("loaded_class", "loads as"), ("generation", "greedy reply to a test prompt"))


def _asset(name: str) -> str:
    return resources.files("qwen35_tune.report").joinpath("assets", name).read_text(encoding="utf-8")


@cache
def environment():
    """The Jinja2 environment: templates from the package, HTML autoescaping on everything."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
    from markupsafe import Markup

    from qwen35_tune import __version__
    from qwen35_tune.report.eval_facts import metric_columns, shown_metrics
    from qwen35_tune.report.svg import fmt

    env = Environment(loader=PackageLoader("qwen35_tune.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    js = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode()
    # the stylesheet and script are ours, inserted verbatim (escaping would turn their quotes into entities)
    env.globals.update(version=__version__, css=Markup(_asset("report.css")), js=Markup(js),
                       script_hash=f"sha256-{digest}", fmt=fmt, shown_metrics=shown_metrics,
                       metric_columns=metric_columns, sections=SECTIONS, verify_rows=VERIFY_ROWS)
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


def write_atomically(path: Path, text: str) -> Path:
    """Write through a temporary file in the same folder, so a reader never sees half a page."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # a page to share (mkstemp made it private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def run_page(run_dir: Path, failure: BaseException | None = None) -> str:
    """The run report of ``run_dir`` as HTML text."""
    from qwen35_tune.report.quarantine_sample import FIRST_ROWS, PER_REASON
    from qwen35_tune.report.view import build_run_view

    view = build_run_view(Path(run_dir), failure=failure)
    return render("run.html.jinja", view=view, generated_at=view.generated_at, first_rows=FIRST_ROWS,
                  per_reason=PER_REASON)


def write_report(run_dir: Path, out: Path | None = None, failure: BaseException | None = None) -> Path:
    """Write ``RUN_DIR/report.html`` (or ``out``); returns its path."""
    run = RunDir(Path(run_dir))
    return write_atomically(Path(out) if out else run.report_html, run_page(run.path, failure))


def write_comparison(run_dirs: list[Path], out: Path) -> Path:
    """Write the side-by-side page of several runs to ``out``; returns its path."""
    from qwen35_tune.report.compare import build_comparison

    view = build_comparison([Path(p) for p in run_dirs])
    page = render("compare.html.jinja", view=view, generated_at=view.generated_at, summary_keys=COMPARED)
    return write_atomically(Path(out), page)
