"""Helpers of the save tests of every package (issue 10): run a save in a forked child, SIGKILL it just before its
k-th file-system call, list what killed saves left beside a folder.

``tests/`` is on ``sys.path`` through its ``conftest.py`` (pytest's default ``prepend`` import mode), so any test
imports this module as ``crash_helpers``.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: Modules whose C functions count as file-system calls: ``os.*`` (posix), ``open`` and file methods (io).
FILE_SYSTEM_MODULES = ("posix", "io", "_io")


def leftovers(target: Path) -> list[str]:
    """Names of the staging / old folders of atomic saves into ``target`` that sit beside it."""
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def in_child(work: Callable[[], object], timeout: float = 120.0) -> int:
    """Run ``work()`` in a forked child; its exit status: 0 when it returned, 3 when it raised (the error is
    printed), ``-signal`` when a signal ended it. torch runs single-threaded in the child. A child still running after ``timeout`` seconds is killed and is
    a test failure (a hang must not hang the suite)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            if (
                "torch" in sys.modules
            ):  # GNU OpenMP's thread pool does not survive a fork: a parallel op would hang
                sys.modules["torch"].set_num_threads(1)
            work()
        except BaseException as error:
            print(f"child: {type(error).__name__}: {error}", file=sys.stderr)
            code = 3
        finally:
            os._exit(code)
    if not _exits_within(pid, timeout):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"the child process still ran after {timeout} s (killed)")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _exits_within(pid: int, timeout: float) -> bool:
    """Whether the child ``pid`` ends within ``timeout`` seconds (a pidfd where Linux has one, else polling)."""
    if hasattr(os, "pidfd_open"):
        descriptor = os.pidfd_open(pid)
        try:
            return bool(select.select([descriptor], [], [], timeout)[0])
        finally:
            os.close(descriptor)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.001)
    return False


def killed_at(work: Callable[[], object], kill_at: int | None) -> int:
    """Run ``work()`` in this process and SIGKILL the process just before its ``kill_at``-th file-system call
    (see `FILE_SYSTEM_MODULES`); with ``kill_at=None`` run it whole. Returns the number of calls (when not
    killed). Meant for a child of `in_child`."""
    calls = 0

    def profile(frame, event, arg):
        nonlocal calls
        if event == "c_call" and getattr(arg, "__module__", None) in FILE_SYSTEM_MODULES:
            calls += 1
            if calls == kill_at:
                sys.setprofile(None)
                os.kill(os.getpid(), signal.SIGKILL)

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


def count_calls(work: Callable[[], object], scratch: Path) -> int:
    """The number of file-system calls ``work()`` makes, run unkilled in a child (this process is left as it
    was); ``scratch`` is a file path the child reports through."""

    def report() -> None:
        scratch.write_text(str(killed_at(work, None)))

    assert in_child(report) == 0
    return int(scratch.read_text())


def kill_points(total: int, spread: int, tail: int) -> list[int]:
    """About ``spread`` kill points evenly over calls ``1..total`` plus each of the last ``tail`` calls (where an
    atomic save swaps the folders and removes the old one)."""
    step = max(1, total // spread)
    return sorted({*range(1, total + 1, step), *range(max(1, total - tail + 1), total + 1)})
