"""The golden reference tensors ship with the repository, unchanged (issue 10, item 7)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "reference"


def test_reference_files_are_in_the_repository_with_their_recorded_checksums():
    provenance = (DATA / "PROVENANCE.md").read_text()
    recorded = dict(re.findall(r"\| `([\w.]+)` \| `([0-9a-f]{64})` \|", provenance))
    assert set(recorded) == {
        "favor_official_tiny.safetensors",
        "favor_official_tiny.json",
        "favor_official_tiny_unitln.safetensors",
        "favor_official_tiny_unitln.json",
    }
    for name, digest in recorded.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name


def test_golden_tests_read_the_repository_copy_by_default():
    # A fresh clone has no FAVOR_REFERENCE_DIR: conftest must fall back to tests/data/reference (so nothing skips).
    env = {k: v for k, v in os.environ.items() if k != "FAVOR_REFERENCE_DIR"}
    code = "import sys; sys.path.insert(0, sys.argv[1]); import conftest; print(conftest.REFERENCE_DIR)"
    found = subprocess.run(
        [sys.executable, "-c", code, str(DATA.parents[1])],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(found.stdout.strip()) == DATA
