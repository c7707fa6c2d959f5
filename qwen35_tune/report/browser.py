"""Headless Chromium through Selenium, for the report's browser tests and its screenshot script (a development
tool: it needs the ``dev`` extra's selenium and Debian's ``chromium`` + ``chromium-driver``; nothing else imports
it). The browser runs offline-minded: no background networking, no component updates, a fresh profile."""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1")


def missing() -> str | None:
    """Why no browser can be driven here (to skip with), or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not any(Path(p).exists() for p in CHROMIUM):
        return "no Chromium (Debian: apt-get install -y chromium chromium-driver)"
    if not any(Path(p).exists() for p in DRIVERS) and not shutil.which("chromedriver"):
        return "no chromedriver (Debian: apt-get install -y chromium-driver)"
    return None


@contextmanager
def chromium(width: int = 1366, height: int = 900):
    """A headless Chromium WebDriver with browser and performance (network) logs on; closed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="qwen35-report-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = next(p for p in CHROMIUM if Path(p).exists())
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver_path = next((p for p in DRIVERS if Path(p).exists()), None) or shutil.which("chromedriver")
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.get("about:blank")  # off Chromium's own start page, whose resources would show up as requests
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, path: Path) -> dict:
    """Load a local file and return what a person's browser did: {'console': [messages of level WARNING and up],
    'requests': [every URL the page asked for], 'load_ms': navigation start to the load event}."""
    driver.get_log("browser")
    driver.get_log("performance")  # drop what the start page logged
    driver.get(Path(path).resolve().as_uri())
    load_ms = driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; return n ? n.loadEventEnd - n.startTime : null;")
    console = [e["message"] for e in driver.get_log("browser") if e.get("level") in ("WARNING", "SEVERE")]
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"]).get("message", {})
        params = message.get("params", {})
        # Chromium's own pages (chrome://, e.g. a start page still loading) are not the report's doing
        if message.get("method") == "Network.requestWillBeSent" and \
                not str(params.get("documentURL", "")).startswith("chrome:"):
            requests.append(params["request"]["url"])
    return {"console": console, "requests": requests, "load_ms": load_ms}


def screenshot_element(driver, element, out: Path) -> Path:
    """A PNG of one element however tall it is (Chromium's DevTools capture beyond the viewport)."""
    import base64

    rect = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height};", element)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": rect["x"], "y": rect["y"], "width": rect["width"], "height": rect["height"], "scale": 1}})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return out
