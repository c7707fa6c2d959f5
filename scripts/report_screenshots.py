"""Screenshots of every section of a run report, to look at (not a test): the tiny default run unless a run directory
is given.

    python scripts/report_screenshots.py [RUN_DIR] [--out DIR]

Without RUN_DIR it trains ``recipes/tiny/sft_lora.yaml`` into a temporary folder first (the README's default run;
a minute or several on a busy CPU). It writes ``RUN_DIR/report.html`` again, opens it in headless Chromium
(Debian's chromium + chromium-driver, selenium from the dev extra) and saves ``OUT/<section>.png`` per section plus
``OUT/page.png``; it prints the console messages and network requests the page made (both should be none).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", type=Path, help="a run directory (default: train the tiny default)")
    parser.add_argument("--out", type=Path, default=Path("report-screenshots"), help="folder for the PNGs")
    parser.add_argument("--width", type=int, default=1366, help="browser window width in pixels")
    args = parser.parse_args(argv)

    from qwen35_tune.report import browser
    from qwen35_tune.report.page import SECTIONS, write_report

    if (why := browser.missing()) is not None:
        print(f"cannot take screenshots: {why}", file=sys.stderr)
        return 2
    run_dir = args.run_dir
    if run_dir is None:
        from qwen35_tune.cli import main as cli

        run_dir = Path(tempfile.mkdtemp(prefix="report-screenshots-run-"))
        if cli(["train", str(REPO / "recipes" / "tiny" / "sft_lora.yaml"), "--output-dir", str(run_dir),
                "--overwrite"]) != 0:
            return 1
    page = write_report(run_dir)
    with browser.chromium(width=args.width) as driver:
        seen = browser.open_page(driver, page)
        for section, _ in SECTIONS:
            element = driver.find_element("id", section)
            print(browser.screenshot_element(driver, element, args.out / f"{section}.png"))
        print(browser.screenshot_element(driver, driver.find_element("tag name", "body"), args.out / "page.png"))
    print(f"report: {page} ({page.stat().st_size:,} bytes), loaded in {seen['load_ms']:.0f} ms")
    print(f"console messages: {seen['console'] or 'none'}")
    others = [url for url in seen["requests"] if url != page.resolve().as_uri()]
    print(f"requests other than the page itself: {others or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
