"""Where output goes: a live terminal gets bars that redraw in place, anything else (CI, nohup, SLURM's slurm-%j.log,
a pipe) gets plain lines, so a log file holds readable text instead of cursor moves and a single box at the end.

The choice per stream: ``TTY_INTERACTIVE=1`` / ``0`` (rich's own override) decides when set; otherwise the stream must
be a TTY whose ``TERM`` can move the cursor (not ``dumb`` / ``unknown``). ``FORCE_COLOR`` asks for colour, not for a
display that redraws, and ``NO_COLOR`` only drops colour (rich honours it): neither changes the choice. Only the main
process (``RANK`` 0) shows progress at all; the other ranks of a launch would repeat it. Torch-free: the CLI calls
``setup_logging`` before any command imports the heavy libraries.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

# Library bars (datasets' map, transformers' weight loading and shard writing, Hub downloads) are tqdm; these are
# the switches those libraries read when they are imported (transformers follows huggingface_hub's).
_LIBRARY_BAR_SWITCHES = ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS")
_NOISY_LOGGERS = ("httpx", "urllib3", "filelock", "datasets", "matplotlib")
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def is_live(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stdout) is a terminal that can redraw a progress bar in place."""
    forced = os.environ.get("TTY_INTERACTIVE")
    if forced in ("0", "1"):
        return forced == "1"
    stream = sys.stdout if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    return tty and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


def shows_live_progress(stream: TextIO | None = None) -> bool:
    """A live bar on ``stream``: on a redrawing terminal, on the main process only."""
    from qwen35_tune.train.distributed import is_main_process

    return is_main_process() and is_live(stream)


class _CurrentStdout(logging.StreamHandler):
    """A plain handler writing to whatever ``sys.stdout`` is when a record is emitted (test capture swaps it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the current sys.stdout is used instead
        pass


def _rich_handler() -> logging.Handler:
    """rich's handler, except that a message starting with a newline (a table, a block of lines) prints at the
    terminal's full width: inside the time / level columns an 80-column table would wrap in an 80-column terminal."""
    from rich.logging import RichHandler

    class BlockAwareRichHandler(RichHandler):
        def emit(self, record: logging.LogRecord) -> None:
            message = self.format(record)
            if message.startswith("\n") and record.levelno <= logging.INFO and not record.exc_info:
                self.console.print(message[1:], markup=False, highlight=False, soft_wrap=True)
            else:
                super().emit(record)

    return BlockAwareRichHandler(show_path=False, markup=False)


def log_handler(stream: TextIO | None = None) -> logging.Handler:
    """rich's columns on a live terminal; elsewhere one plain ``time LEVEL message`` line per record, never wrapped."""
    if is_live(stream):
        return _rich_handler()
    handler = _CurrentStdout()
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    return handler


def quiet_library_bars() -> None:
    """Turn the libraries' tqdm bars off where they would not redraw (stderr not live) or would repeat (other ranks).

    Set before those libraries are imported; a switch the user set already is left as it is."""
    if shows_live_progress(sys.stderr):
        return
    for switch in _LIBRARY_BAR_SWITCHES:
        os.environ.setdefault(switch, "1")
    if "datasets" in sys.modules:  # imported already: the switch above was read at its import
        from datasets.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def setup_logging(verbose: bool = False) -> None:
    """The process's logging for a CLI command: handler chosen for stdout, library bars quiet off a live terminal,
    and INFO from the main process only (other ranks of a launch log warnings and errors)."""
    from qwen35_tune.train.distributed import is_main_process

    level = logging.DEBUG if verbose else logging.INFO
    if not is_main_process() and not verbose:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", handlers=[log_handler()], force=True)
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_library_bars()
