"""Cost and sanity of the eval checkers on the real public sets: sandbox runs per second, math checks per second.

    OMP_NUM_THREADS=1 python benchmarks/eval_checkers.py [--workers 2]

- HumanEval: every task's canonical solution through the sandbox (must all pass: the guard refuses nothing a real
  solution needs), and every task with a wrong body (`return None`, must not pass); wall time and runs/s.
- Sandbox limits: how long an infinite loop with a 1 s limit takes to be killed.
- Sandbox overhead: wall time and child CPU time of one trivial passing call, with the namespaces and with the guard
  only (QWEN35_TUNE_SANDBOX=off), sequentially and 8 calls at once.
- CHAMP: extract + math-verify check of every reference answer (must all match), and of a perturbed answer.
"""

from __future__ import annotations

import argparse
import functools
import re
import resource
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor


def human_eval(workers: int) -> None:
    from qwen35_tune.eval.code_sandbox import extract_code, run_with_tests
    from qwen35_tune.eval.public_sets import load_eval_rows

    rows = load_eval_rows("human-eval")
    good = [(extract_code(r["messages"][-1]["content"]), r["tests"]) for r in rows]
    # Wrong solutions: the same functions with their whole body replaced by `return None`.
    bad = [(re.sub(r'(def \w+\(.*?\).*?:\n(?:\s+""".*?"""\n)?)(.*)', r"\1    return None\n", code, count=1,
                   flags=re.DOTALL), tests) for code, tests in good]
    for name, cases in (("canonical", good), ("return None", bad)):
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda c: run_with_tests(c[0], c[1], timeout_s=10), cases))
        wall = time.perf_counter() - start
        verdicts = Counter(r.verdict for r in results)
        print(f"HumanEval {name:12s}: {len(cases)} tasks, verdicts {dict(verdicts)}, {wall:.1f}s wall, "
              f"{len(cases) / wall:.1f} runs/s ({workers} workers), median run "
              f"{sorted(r.seconds for r in results)[len(results) // 2] * 1000:.0f} ms")


def limits() -> None:
    from qwen35_tune.eval.code_sandbox import run_with_tests

    for code, label in (("while True:\n    pass", "busy loop"), ("import time\ntime.sleep(60)", "sleep")):
        result = run_with_tests(code, [], timeout_s=1.0)
        print(f"sandbox {label:9s} with 1 s limit: {result.verdict} after {result.seconds:.2f}s")


def overhead(calls: int = 30) -> None:
    from qwen35_tune.eval.code_sandbox import run_with_tests

    code, tests = "def add(a, b):\n    return a + b\n", ["assert add(2, 3) == 5"]
    for mode in ("auto", "off"):
        first = run_with_tests(code, tests, isolation=mode)
        walls, cpus = [], []
        for _ in range(calls):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            assert run_with_tests(code, tests, isolation=mode).verdict == "passed"
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(functools.partial(run_with_tests, isolation=mode), [code] * 32, [tests] * 32))
        parallel = time.perf_counter() - start
        assert all(r.verdict == "passed" for r in results)
        print(f"sandbox overhead ({first.isolation}): median {statistics.median(walls) * 1000:.0f} ms wall, "
              f"{statistics.median(cpus) * 1000:.0f} ms child CPU per call; 32 calls, 8 at once: {parallel:.1f}s")


def champ() -> None:
    from qwen35_tune.eval.math_answers import answers_equivalent, extract_answer
    from qwen35_tune.eval.public_sets import load_eval_rows

    rows = load_eval_rows("champ")
    start = time.perf_counter()
    same = sum(answers_equivalent(extract_answer(r["messages"][-1]["content"]), r["check"]) for r in rows)
    wall = time.perf_counter() - start
    numeric = [r for r in rows if re.fullmatch(r"-?\d+", str(r["check"]).strip())]
    start = time.perf_counter()
    wrong = sum(answers_equivalent(str(int(r["check"]) + 1), r["check"]) for r in numeric)
    symbolic = time.perf_counter() - start  # unequal strings: every one goes through math-verify's parse + verify
    print(f"CHAMP reference answers: {same}/{len(rows)} extracted and verified equal ({len(rows) / wall:.0f} "
          f"checks/s); integer answers off by one judged equal: {wrong}/{len(numeric)} "
          f"({len(numeric) / symbolic:.0f} symbolic checks/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    human_eval(args.workers)
    limits()
    overhead()
    champ()


if __name__ == "__main__":
    main()
