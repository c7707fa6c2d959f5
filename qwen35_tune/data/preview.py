"""What the trainer will see, for people: rendered rows with trained tokens highlighted (the `preview` command),
and the per-card table plus length histogram of `data stats`. Returns rich renderables; only the CLI prints."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.hygiene import check_media
from qwen35_tune.data.render import RenderedRow, render_with_mask
from qwen35_tune.data.render_media import has_media, place_media
from qwen35_tune.data.sources import iter_card_rows

TRAINED, MASKED, THINK = "bold green", "dim", "magenta"
OPEN, CLOSE = "⟦", "⟧"  # around trained tokens in plain output
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


@dataclass(frozen=True)
class PreviewRow:
    """One row as previewed: where it came from and its rendering (or why it was rejected)."""

    card: str
    source: str
    number: int
    row: RenderedRow | None
    problem: str | None = None


def preview_rows(recipe, tokenizer, n_rows: int) -> list[PreviewRow]:
    """The first ``n_rows`` rows of each training card, rendered and masked exactly as training does."""
    chat = recipe.chat
    template = chat_template_text(chat)
    out: list[PreviewRow] = []
    for _, card in recipe.card_pairs():
        for index, (source, number, raw) in enumerate(iter_card_rows(card)):
            if index >= n_rows:
                break
            out.append(preview_row(card, chat, template, tokenizer, source, number, raw))
    return out


def chat_template_text(chat) -> str | None:
    """The recipe's own chat template (``chat.template``), None for the checkpoint's."""
    return Path(chat.template).read_text(encoding="utf-8") if chat.template else None


def canonical_row(card, raw) -> dict:
    """A source row in the canonical messages form, media checked and placed as training places them (BadRow if
    training would quarantine it)."""
    if isinstance(raw, BadRow):
        raise raw
    row = check_media(normalise_row(raw, card.format, card.columns), card.media_base, card.media_roots)
    if has_media(row):  # media where training puts them (one vision pad each, unexpanded)
        messages = place_media(row["messages"], len(row.get("images") or []), len(row.get("videos") or []))
        row = {**row, "messages": messages}
    return row


def preview_row(card, chat, template: str | None, tokenizer, source: str, number: int, raw) -> PreviewRow:
    """One source row rendered and masked exactly as training does (or the reason it would be quarantined)."""
    try:
        row = canonical_row(card, raw)
        rendered = render_with_mask(tokenizer, row, template=template, train_on=chat.train_on,
                                    mask_empty_think=chat.mask_empty_think, enable_thinking=chat.enable_thinking)
        return PreviewRow(card.name, source, number, rendered)
    except BadRow as exc:
        return PreviewRow(card.name, source, number, None, str(exc))


def token_pieces(row: RenderedRow, tokenizer) -> list[tuple[str, bool, bool]]:
    """(text, trained, inside reasoning) for every token of the row, in order: what the previews colour."""
    enc = tokenizer(row.text, add_special_tokens=False, return_offsets_mapping=True)
    think = [m.span() for m in _THINK.finditer(row.text)]
    return [(row.text[start:end], label != -100, any(a <= start < b for a, b in think))
            for (start, end), label in zip(enc["offset_mapping"], row.labels, strict=True)]


def styled_row(row: RenderedRow, tokenizer):
    """A rich Text of the row: trained tokens highlighted, masked ones dim, reasoning spans in another colour."""
    from rich.text import Text

    text = Text()
    for piece, trained, in_think in token_pieces(row, tokenizer):
        style = TRAINED if trained else MASKED
        if in_think:
            style += f" {THINK}" if trained else " italic"
        text.append(piece, style=style)
    return text


def marked_text(row: RenderedRow, tokenizer) -> str:
    """The row as plain text with each run of trained tokens between ⟦ and ⟧, for logs without colour (CI)."""
    parts, inside = [], False
    for piece, trained, _ in token_pieces(row, tokenizer):
        if trained != inside:
            parts.append(OPEN if not inside else CLOSE)
            inside = not inside
        parts.append(piece)
    return "".join(parts) + (CLOSE if inside else "")


def preview_renderables(rows: list[PreviewRow], tokenizer, plain: bool = False) -> list:
    """Header + styled body per row, and a legend first; ``plain`` marks trained tokens with ⟦…⟧ instead of colour
    (for output that is not a terminal, or NO_COLOR)."""
    from rich.panel import Panel
    from rich.text import Text

    legend = Text.assemble(
        ("trained", TRAINED), "  ", ("masked", MASKED), "  ", ("trained reasoning", f"{TRAINED} {THINK}")
    )
    if plain:
        legend = Text(f"{OPEN}trained{CLOSE}  masked")
    out: list = [legend]
    for item in rows:
        where = f"{item.card} row {item.number} ({Path(item.source).name})"
        if item.row is None:
            out.append(Panel(Text(f"quarantined: {item.problem}", style="red"), title=where, title_align="left"))
            continue
        n, trained = len(item.row.input_ids), item.row.n_trained
        title = f"{where}: {n} tokens, {trained} trained ({trained / n:.0%})"
        body = Text(marked_text(item.row, tokenizer)) if plain else styled_row(item.row, tokenizer)
        out.append(Panel(body, title=title, title_align="left"))
    return out


def stats_table(stats: dict):
    """Per-card table of where rows went and how long they are."""
    from rich.table import Table

    table = Table(title="data cards")
    for col in ("card", "rows", "bad", "dupes", "contam.", "trunc.", "dropped", "train", "eval", "p50", "p90", "p99",
                "max", "trained tok."):
        table.add_column(col, justify="left" if col == "card" else "right")
    for card in stats["cards"]:
        pct = card.get("length_percentiles") or {}
        table.add_row(
            card["name"], str(card["rows"]), str(sum(card["bad"].values())), str(card["duplicate"]),
            str(card["contaminated"]), str(card["truncated"]), str(card["too_long_dropped"]), str(card["train"]),
            str(card["eval"]), *(str(pct.get(k, "-")) for k in ("p50", "p90", "p99", "max")),
            f"{card['trained_tokens']:,}",
        )
    return table


def bad_reasons_table(stats: dict):
    """Bad rows by card and reason (empty when there are none)."""
    from rich.table import Table

    table = Table(title="quarantined rows by reason")
    table.add_column("card")
    table.add_column("reason")
    table.add_column("rows", justify="right")
    for card in stats["cards"]:
        for reason, n in sorted(card["bad"].items(), key=lambda kv: -kv[1]):
            table.add_row(card["name"], reason, str(n))
    return table


def plot_lengths(train_ds, eval_ds, max_length: int, path: Path) -> Path:
    """Histogram of token lengths (train and eval) with the max_length cut marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ds in (("train", train_ds), ("eval", eval_ds)):
        if ds is not None and len(ds):
            ax.hist([len(ids) for ids in ds["input_ids"]], bins=40, alpha=0.6, label=f"{name} ({len(ds)} rows)")
    ax.axvline(max_length, color="red", linestyle="--", label=f"train.max_length={max_length}")
    ax.set_xlabel("tokens per row")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
