"""Importing favor_avsync must not import PyAV or transformers (PyAV only when media is loaded)."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light():
    code = (
        "import sys, favor_avsync, favor_avsync.testing\n"
        "heavy = [m for m in ('av', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api():
    import favor_avsync

    for name in (
        "TemporalSynchroniser",
        "SyncOutput",
        "load_media",
        "MediaClip",
        "MediaError",
        "MissingMediaError",
    ):
        assert name in favor_avsync.__all__
        assert getattr(favor_avsync, name) is not None
    assert issubclass(favor_avsync.MediaError, ValueError)
    assert issubclass(favor_avsync.MissingMediaError, FileNotFoundError)
