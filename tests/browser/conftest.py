"""Names the screenshots the browser tests saved in this run, in its summary (the CI log)."""

from __future__ import annotations

import time

import pytest

from tests.browser.test_docs_in_chromium import SCREENSHOTS

_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    shots = sorted(SCREENSHOTS.glob("*.png")) if SCREENSHOTS.is_dir() else []
    fresh = [shot for shot in shots if shot.stat().st_mtime >= _STARTED]
    if fresh:
        terminalreporter.section("browser screenshots")
        for shot in fresh:
            terminalreporter.write_line(str(shot))
