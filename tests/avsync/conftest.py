"""favor-avsync test helpers: a safetensors reader (favor-avsync does not depend on safetensors, and its
isolated test session installs only its own dependencies) and a terminal summary of the measured tone-onset
errors of the media tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "F16": np.float16}


def read_safetensors(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors of a .safetensors file (format: u64 header size, JSON header, little-endian data)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        base = 8 + size
        out = {}
        for name in names:
            meta = header[name]
            start, end = meta["data_offsets"]
            f.seek(base + start)
            array = np.frombuffer(
                f.read(end - start), dtype=np.dtype(_DTYPES[meta["dtype"]]).newbyteorder("<")
            )
            out[name] = torch.from_numpy(array.reshape(meta["shape"]).copy())
    return out


@pytest.fixture(scope="session")
def safetensors_reader():
    """`read_safetensors(path, names)`, as a fixture (test modules here are not a package)."""
    return read_safetensors


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
