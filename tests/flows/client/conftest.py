"""Fixtures of the client tests: the CLI's log levels do not leak into later tests.

``remote-network workflow ...`` quiets the node's loggers for its one-line errors; the tests
run it in-process, so the levels are put back after each test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

QUIETED_LOGGERS = ("remote_network", "orchestrator")


@pytest.fixture(autouse=True)
def restore_log_levels() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in QUIETED_LOGGERS]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
