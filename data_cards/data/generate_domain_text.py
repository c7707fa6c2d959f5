"""Write the project's own small finance corpus for continued pretraining (no copied text): quarterly-report
excerpts, credit memos and market notes of fictional companies, from a few hundred words to several thousand, in
gzipped JSON Lines shards. A few documents are re-issued with a changed date and figure (near-duplicates) or copied
verbatim (exact duplicates), as real filing dumps have, so the dedupe counts of a run are not all zero.

Run from anywhere: `python data_cards/data/generate_domain_text.py`; output is deterministic (seeded, gzip mtime 0).
"""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE / "finance_filings"
SHARDS = 4
DOCUMENTS = 240

COMPANIES = ["Arden Logistics", "Bellmont Foods", "Corvale Energy", "Dunmore Textiles", "Eastwick Medical",
             "Fairhaven Software", "Glenrock Mining", "Halden Retail", "Iverson Chemicals", "Juniper Telecom"]
SEGMENTS = ["domestic freight", "consumer packaged goods", "renewable generation", "industrial fabrics",
            "diagnostic equipment", "cloud subscriptions", "copper concentrate", "specialty stores",
            "coatings and resins", "fixed broadband"]
RISKS = ["interest rates remain elevated", "input costs rise faster than prices", "a large customer renegotiates its "
         "contract", "currency movements reduce reported revenue", "regulators tighten capital requirements",
         "supply disruptions delay shipments", "demand softens in the second half"]
QUARTERS = ["first", "second", "third", "fourth"]


def money(rng: random.Random, low: int, high: int) -> str:
    return f"{rng.randint(low, high) / 10:.1f} million"


def report(rng: random.Random, company: str, segment: str, year: int, quarter: str, sections: int) -> str:
    """A quarterly-report excerpt: an overview and ``sections`` discussion sections."""
    revenue, margin = money(rng, 800, 9000), rng.randint(8, 41)
    parts = [f"{company} reported revenue of {revenue} for the {quarter} quarter of {year}, with a gross margin of "
             f"{margin} percent. Management attributed the result mainly to {segment}, where volumes "
             f"{rng.choice(['grew', 'held steady', 'declined slightly'])} compared with the prior year."]
    for number in range(sections):
        risk = rng.choice(RISKS)
        parts.append(
            f"Section {number + 1}. Operating expenses were {money(rng, 100, 2000)}, of which "
            f"{rng.randint(10, 60)} percent related to personnel. Cash from operations was {money(rng, 50, 3000)} "
            f"and capital expenditure {money(rng, 20, 900)}. The company repaid {money(rng, 10, 500)} of its term "
            f"loan and ended the period with net debt of {money(rng, 100, 6000)}, or {rng.randint(5, 35) / 10:.1f} "
            f"times trailing earnings before interest, taxes, depreciation and amortisation. The board noted that "
            f"results could differ materially if {risk}. Liquidity, including undrawn facilities, stood at "
            f"{money(rng, 100, 4000)}, which management considers sufficient for the next twelve months."
        )
    parts.append(f"The board declared a dividend of {rng.randint(5, 90)} cents per share, payable next quarter.")
    return "\n\n".join(parts)


def credit_memo(rng: random.Random, company: str, segment: str) -> str:
    """A short credit memo."""
    return (f"Credit memo: {company}. The borrower operates in {segment}. Leverage is "
            f"{rng.randint(10, 50) / 10:.1f} times and interest cover {rng.randint(15, 90) / 10:.1f} times. We "
            f"recommend a {rng.choice(['stable', 'positive', 'negative'])} outlook; the main risk is that "
            f"{rng.choice(RISKS)}.")


def market_note(rng: random.Random) -> str:
    """A one-paragraph market note."""
    return (f"Market note. Ten-year yields moved {rng.randint(1, 30)} basis points "
            f"{rng.choice(['higher', 'lower'])} and credit spreads {rng.choice(['widened', 'tightened'])} by "
            f"{rng.randint(1, 25)} basis points, while the equity index closed {rng.randint(1, 40) / 10:.1f} percent "
            f"{rng.choice(['up', 'down'])} for the week.")


def documents(rng: random.Random) -> list[str]:
    docs: list[str] = []
    for i in range(DOCUMENTS):
        kind = i % 6
        company, segment = COMPANIES[i % len(COMPANIES)], SEGMENTS[i % len(SEGMENTS)]
        if kind < 3:
            sections = rng.choice([1, 2, 4, 12, 30]) if kind == 0 else rng.randint(1, 5)
            docs.append(report(rng, company, segment, 2019 + i % 6, QUARTERS[i % 4], sections))
        elif kind < 5:
            docs.append(credit_memo(rng, company, segment))
        else:
            docs.append(market_note(rng))
    for i in range(0, 60, 12):  # re-issued filings: one date and one figure changed (near-duplicates)
        words = docs[i].split(" ")
        words[rng.randrange(len(words))] = "restated"
        docs.append(" ".join(words).replace(str(2019 + i % 6), str(2020 + i % 6), 1))
    docs.extend(docs[i] for i in range(3, 40, 9))  # verbatim copies (exact duplicates)
    rng.shuffle(docs)
    return docs


def write_shard(path: Path, rows: list[str]) -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
        for text in rows:
            gz.write((json.dumps({"text": text}, ensure_ascii=False) + "\n").encode("utf-8"))
    path.write_bytes(buffer.getvalue())


def main() -> None:
    docs = documents(random.Random(1807))
    OUT.mkdir(exist_ok=True)
    for shard in range(SHARDS):
        write_shard(OUT / f"filings-{shard:04d}.jsonl.gz", docs[shard::SHARDS])


if __name__ == "__main__":
    main()
