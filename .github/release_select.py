"""Keep in ``dist/`` only the distributions a release tag names; used by .github/workflows/release.yml.

Tags: ``v<version>`` releases every package whose version is ``<version>``; ``<package>-v<version>`` (package one of
favor-qformer, favor-avsync, favor-llm) releases that package alone, and its version must be ``<version>``.
Usage: ``python .github/release_select.py <tag> [dist]``; exits non-zero when the tag names nothing built.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGES = ("favor-qformer", "favor-avsync", "favor-llm")
TAG = re.compile(r"(?:(?P<package>" + "|".join(PACKAGES) + r")-)?v(?P<version>\d+\.\d+\.\d+\S*)")
DISTRIBUTION = re.compile(r"(?P<name>favor_[a-z]+)-(?P<version>[^-]+?)(?:-py3-none-any\.whl|\.tar\.gz)")


def select(tag: str, dist: Path) -> list[str]:
    """Delete from ``dist`` what ``tag`` does not release; returns the kept file names.

    Raises:
        ValueError: a tag of another form, or one that matches no built distribution.
    """
    match = TAG.fullmatch(tag)
    if match is None:
        raise ValueError(
            f"tag {tag!r}: expected v<version> or <package>-v<version>, package one of {PACKAGES}"
        )
    package, version = match["package"], match["version"]
    kept = []
    for path in sorted(dist.iterdir()):
        found = DISTRIBUTION.fullmatch(path.name)
        if found is None:
            raise ValueError(f"{path}: not a wheel or sdist of this repository")
        if (package is None or found["name"] == package.replace("-", "_")) and found["version"] == version:
            kept.append(path.name)
        else:
            path.unlink()
    if not kept:
        raise ValueError(f"tag {tag!r}: no built package {package or ''} has version {version}")
    return kept


if __name__ == "__main__":
    try:
        print("releasing", select(sys.argv[1], Path(sys.argv[2] if len(sys.argv) > 2 else "dist")))
    except ValueError as error:
        sys.exit(str(error))
