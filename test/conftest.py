"""Shared pytest configuration.

With ``SPANN3R_NO_SKIPS=1`` (set by CI) every skipped test fails the run: a skipped test is
never counted as passing there.
"""

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / 'data'


@pytest.fixture
def data_dir() -> Path:
    """Committed test fixtures."""
    return DATA


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: D103
    outcome = yield
    report = outcome.get_result()
    strict = os.environ.get('SPANN3R_NO_SKIPS') == '1'
    if strict and report.skipped and not hasattr(report, 'wasxfail'):
        report.outcome = 'failed'
        report.longrepr = f'skipped test not allowed in CI: {report.longrepr}'
