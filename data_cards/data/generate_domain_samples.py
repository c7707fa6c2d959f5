"""Write the project's own small samples (no copied datasets): verifiable CoT arithmetic, Python tasks with tests,
short finance / medical / legal chats, an English <-> French / Chinese translation set, and the verifiable twins of
the arithmetic, Python and translation samples (prompt + answer check, for stage: grpo).

Run from anywhere: `python data_cards/data/generate_domain_samples.py`; output is deterministic (seeded).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Ema", "Farid", "Gita", "Hugo", "Ines", "Jon", "Kai", "Lea"]
ITEMS = ["apples", "pencils", "stamps", "marbles", "books", "cards", "shells", "coins"]


def write(name: str, rows: list[dict]) -> None:
    with (HERE / name).open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def cot_arithmetic(rng: random.Random, n: int = 60) -> list[dict]:
    """Two-step word problems; `answer` ends with the number, and `check` holds it for verification."""
    rows = []
    for i in range(n):
        who, item = NAMES[i % len(NAMES)], ITEMS[i % len(ITEMS)]
        start, bought, per_box = rng.randint(5, 60), rng.randint(2, 9), rng.randint(2, 12)
        gave = rng.randint(1, start)
        rows.append(arithmetic_row(who, item, start, gave, bought, per_box))
    return rows


def arithmetic_row(who: str, item: str, start: int, gave: int, bought: int, per_box: int) -> dict:
    """One problem in the card's columns (also used by benchmarks/cot_math_accuracy.py, which needs the same text)."""
    total = start - gave + bought * per_box
    return {
        "question": f"{who} has {start} {item}, gives away {gave}, then buys {bought} boxes of {per_box} "
                    f"{item} each. How many {item} does {who} have now?",
        "reasoning": f"Start with {start}. After giving away {gave}: {start} - {gave} = {start - gave}. "
                     f"The boxes hold {bought} * {per_box} = {bought * per_box}. "
                     f"Total: {start - gave} + {bought * per_box} = {total}.",
        "answer": f"{who} has {total} {item}. The answer is {total}.",
        "check": total,
    }


def cot_arithmetic_preference(rng: random.Random, n: int = 120) -> list[dict]:
    """Preference pairs over the same kind of problem: the correct worked answer (chosen) against one that adds the
    items given away instead of subtracting them (rejected); reasoning inline as <think>...</think>."""
    rows = []
    for i in range(n):
        who, item = NAMES[i % len(NAMES)], ITEMS[(i * 5) % len(ITEMS)]
        start, bought, per_box = rng.randint(5, 60), rng.randint(2, 9), rng.randint(2, 12)
        gave = rng.randint(1, start)
        right = arithmetic_row(who, item, start, gave, bought, per_box)
        wrong_left, boxes = start + gave, bought * per_box
        wrong = (f"Start with {start}. After giving away {gave}: {start} + {gave} = {wrong_left}. The boxes hold "
                 f"{bought} * {per_box} = {boxes}. Total: {wrong_left} + {boxes} = {wrong_left + boxes}.")
        rows.append({
            "prompt": right["question"],
            "chosen": f"<think>\n{right['reasoning']}\n</think>\n\n{right['answer']}",
            "rejected": f"<think>\n{wrong}\n</think>\n\n{who} has {wrong_left + boxes} {item}. The answer is "
                        f"{wrong_left + boxes}.",
        })
    return rows


PY_TASKS = [
    ("add", "a, b", "return a + b", [((2, 3), 5), ((-1, 1), 0)]),
    ("is_even", "n", "return n % 2 == 0", [((4,), True), ((7,), False)]),
    ("reverse", "s", "return s[::-1]", [(("abc",), "cba"), (("",), "")]),
    ("square_all", "xs", "return [x * x for x in xs]", [(([1, 2, 3],), [1, 4, 9])]),
    ("count_vowels", "s", "return sum(c in 'aeiou' for c in s.lower())", [(("Hello",), 2)]),
    ("clamp", "x, lo, hi", "return max(lo, min(hi, x))", [((5, 0, 3), 3), ((-2, 0, 3), 0)]),
    ("factorial", "n", "return 1 if n < 2 else n * factorial(n - 1)", [((5,), 120), ((0,), 1)]),
    ("first_word", "s", "return s.split()[0] if s.split() else ''", [(("hi there",), "hi")]),
    ("mean", "xs", "return sum(xs) / len(xs)", [(([1, 2, 3],), 2.0)]),
    ("dedupe", "xs", "return list(dict.fromkeys(xs))", [(([1, 1, 2],), [1, 2])]),
]
PY_VERBS = {"add": "adds two numbers", "is_even": "tells whether an integer is even",
            "reverse": "reverses a string",
            "square_all": "squares every number in a list", "count_vowels": "counts the vowels in a string",
            "clamp": "clamps x into [lo, hi]", "factorial": "computes n factorial recursively",
            "first_word": "returns the first word of a string", "mean": "returns the mean of a list",
            "dedupe": "removes duplicates from a list, keeping order"}


def python_tasks() -> list[dict]:
    rows = []
    styles = ("Write a Python function `{name}({args})` that {verb}.",
              "In Python, implement {name}({args}): it {verb}.")
    for style in styles:
        for name, args, body, cases in PY_TASKS:
            code = f"def {name}({args}):\n    {body}"
            tests = [f"assert {name}({', '.join(map(repr, a))}) == {e!r}" for a, e in cases]
            rows.append({
                "messages": [
                    {"role": "user", "content": style.format(name=name, args=args, verb=PY_VERBS[name])},
                    {"role": "assistant", "reasoning_content": f"The function {PY_VERBS[name]}; one line does it: "
                     f"`{body}`. Check: {tests[0].removeprefix('assert ')}.",
                     "content": f"```python\n{code}\n```"},
                ],
                "tests": tests,
            })
    return rows


DOMAIN_QA = {
    "finance": [
        ("What is compound interest?", "Interest earned on both the original amount and the interest already added. "
         "At {r}% a year, {p} grows to about {v} after {y} years."),
        ("How much is {p} after {y} years at {r}% simple interest?", "Simple interest adds {p} * {r}% each year: "
         "{p} + {y} * {i} = {s}."),
        ("What does diversification mean for a portfolio?", "Spreading money over assets that do not move together, "
         "so one loss hurts less. It lowers risk without promising higher returns."),
    ],
    "medical": [
        ("What is a normal resting heart rate for adults?", "Usually 60 to 100 beats per minute; trained athletes can "
         "be lower. See a clinician if a low or high rate comes with dizziness or chest pain."),
        ("How much water should an adult drink a day?", "Needs vary with body size, climate and activity; about "
         "{l} litres from drinks and food is a common guide. Thirst and pale urine are good signs."),
        ("When should a fever be checked by a doctor?", "Seek care for a fever above 39.4 C, one lasting more than "
         "{d} days, or any fever with a stiff neck, confusion or trouble breathing."),
    ],
    "legal": [
        ("What is the difference between a contract and an agreement?", "A contract is an agreement the law will "
         "enforce: it needs an offer, acceptance, consideration and intent to be bound."),
        ("What does 'force majeure' mean in a contract?", "A clause excusing a party when events beyond its control "
         "(war, disaster) prevent performance; its exact scope is whatever the clause lists."),
        ("Is a verbal agreement binding?", "Often yes, but some contracts (for land, or lasting over {y} years in "
         "many systems) must be in writing. This is general information, not legal advice."),
    ],
}
SYSTEMS = {"finance": "You are a careful financial explainer. You do not give personal investment advice.",
           "medical": "You give general health information and say when to see a clinician.",
           "legal": "You explain legal concepts in plain language; you are not a lawyer."}


def domain_chats(domain: str, rng: random.Random, n: int = 40) -> list[dict]:
    rows, seen = [], set()
    for _ in range(50 * n):  # bounded: some questions have few variants
        if len(rows) >= n:
            break
        q, a = rng.choice(DOMAIN_QA[domain])
        p, r, y = rng.choice([1000, 2500, 5000, 8000]), rng.choice([2, 3, 4, 5]), rng.choice([1, 2, 3, 5, 10])
        vals = {"p": p, "r": r, "y": y, "v": round(p * (1 + r / 100) ** y), "i": p * r // 100,
                "s": p + y * p * r // 100, "l": rng.choice(["1.5", "2", "2.5"]), "d": rng.choice([2, 3])}
        q, a = q.format(**vals), a.format(**vals)
        follow = rng.random() < 0.4
        key = (q, a, follow)
        if key in seen:
            continue
        seen.add(key)
        messages = [{"role": "system", "content": SYSTEMS[domain]}, {"role": "user", "content": q},
                    {"role": "assistant", "content": a}]
        if follow:
            messages += [{"role": "user", "content": "Can you say that in one sentence?"},
                         {"role": "assistant", "content": a.split(". ")[0].rstrip(".") + "."}]
        rows.append({"messages": messages})
    return rows


PHRASES = [  # (en, fr, zh)
    ("Good morning.", "Bonjour.", "早上好。"), ("Thank you very much.", "Merci beaucoup.", "非常感谢。"),
    ("Where is the train station?", "Où est la gare ?", "火车站在哪里？"), ("I would like a coffee.",
     "Je voudrais un café.", "我想要一杯咖啡。"), ("The meeting starts at nine.", "La réunion commence à neuf heures.",
     "会议九点开始。"), ("How much does it cost?", "Combien ça coûte ?", "这个多少钱？"),
    ("The invoice is attached.", "La facture est jointe.", "发票已附上。"), ("Please sign the contract.",
     "Veuillez signer le contrat.", "请签署合同。"), ("Take this medicine twice a day.",
     "Prenez ce médicament deux fois par jour.", "这个药每天吃两次。"), ("The weather is nice today.",
     "Il fait beau aujourd'hui.", "今天天气很好。"),
]
LANGS = {"en": "English", "fr": "French", "zh": "Chinese"}


def translation() -> list[dict]:
    rows = []
    for en, fr, zh in PHRASES:
        text = {"en": en, "fr": fr, "zh": zh}
        for src, dst in (("en", "fr"), ("fr", "en"), ("en", "zh"), ("zh", "en")):
            rows.append({"instruction": f"Translate from {LANGS[src]} to {LANGS[dst]}.", "input": text[src],
                         "output": text[dst]})
    return rows


def verifiable_arithmetic(row: dict) -> dict:
    """The GRPO twin of a CoT arithmetic row: the question, and the number a correct answer must equal."""
    return {"prompt": row["question"], "answer": row["check"]}


def verifiable_python(row: dict) -> dict:
    """The GRPO twin of a Python task: the request, and the tests the answer's code must pass."""
    return {"prompt": row["messages"][0]["content"] + " Answer with the code in a ```python block.",
            "tests": row["tests"]}


def verifiable_translation(row: dict) -> dict:
    """The GRPO twin of a translation row: the instruction and text, and the reference chrF scores against."""
    return {"prompt": f"{row['instruction']}\n\n{row['input']}", "reference": row["output"]}


def main() -> None:
    rng = random.Random(1234)
    arithmetic, tasks = cot_arithmetic(rng), python_tasks()
    write("cot_arithmetic.jsonl", arithmetic)
    write("python_tasks.jsonl", tasks)
    for domain in ("finance", "medical", "legal"):
        write(f"{domain}_chat.jsonl", domain_chats(domain, rng))
    phrases = translation()
    write("translation.jsonl", phrases)
    # its own seed: adding this set left every file above byte-identical
    write("cot_arithmetic_preference.jsonl", cot_arithmetic_preference(random.Random(5678)))
    # Verifiable twins for stage: grpo (prompts with answer checks); derived, so the files above stay as they were.
    write("cot_arithmetic_verifiable.jsonl", [verifiable_arithmetic(row) for row in arithmetic])
    write("python_tasks_verifiable.jsonl", [verifiable_python(row) for row in tasks])
    write("translation_verifiable.jsonl", [verifiable_translation(row) for row in phrases])


if __name__ == "__main__":
    main()
