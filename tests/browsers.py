"""Which Chromium the browser tests drive; importable without Playwright, torch or Gradio (tests/test_devices.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
NO_CHROMIUM = (
    "no Chromium found for the browser test: set PLAYWRIGHT_CHROMIUM_EXECUTABLE to a Chromium or Chrome binary, or put "
    "one on PATH (Debian/Ubuntu: apt-get install chromium; macOS: brew install --cask chromium), or download "
    "Playwright's own with `python -m playwright install chromium`"
)


def find_chromium(bundled: str | Path | None = None) -> str | None:
    """$PLAYWRIGHT_CHROMIUM_EXECUTABLE, else the first Chromium or Chrome on PATH; None when neither is there but
    `bundled` (Playwright's own download, `playwright.chromium.executable_path`) is, for Playwright to launch it.

    FileNotFoundError when the variable names no file, or when there is no Chromium at all (NO_CHROMIUM says how to
    get one).
    """
    chosen = os.environ.get("PLAYWRIGHT_CHROMIUM_EXECUTABLE")
    if chosen:
        if not Path(chosen).is_file():
            raise FileNotFoundError(f"PLAYWRIGHT_CHROMIUM_EXECUTABLE={chosen} does not exist")
        return chosen
    found = next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)
    if found is None and not (bundled and Path(bundled).is_file()):
        raise FileNotFoundError(NO_CHROMIUM)
    return found
