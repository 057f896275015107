"""favor-avsync test helpers: a terminal summary of the measured tone-onset errors of the media tests."""

from __future__ import annotations

import pytest

_ONSETS = pytest.StashKey[dict]()


@pytest.fixture
def onset_errors(request) -> dict[str, float]:
    """Where tests/avsync/test_media.py records each clip's tone-onset error (seconds, decoded - truth)."""
    return request.config.stash.setdefault(_ONSETS, {})


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the recorded onset errors (those measured in this process; under xdist, see the junit properties)."""
    errors = config.stash.get(_ONSETS, {})
    if not errors:
        return
    terminalreporter.section("favor-avsync: tone onset error (decoded - truth)")
    for name, err in sorted(errors.items()):
        terminalreporter.write_line(f"{name:24s} {err * 1000:+8.3f} ms")
    worst = max(abs(e) for e in errors.values())
    terminalreporter.write_line(f"{'worst':24s} {worst * 1000:8.3f} ms (tolerance 20 ms)")
