"""Atomic checkpoint folders: a save either lands whole or leaves the previous checkpoint untouched.

``atomic_save_directory(target)`` is a context manager for any code that writes a checkpoint folder (it knows
nothing about the Q-Former; favor-llm's savers can use it as they are):

```python
from favor_qformer.saving import atomic_save_directory

with atomic_save_directory("ckpt", owned=["*.safetensors", "config.json"]) as staging:
    save_file(tensors, staging / "model.safetensors")  # write every file of the checkpoint into `staging`
    (staging / "config.json").write_text(text)
# "ckpt" now holds the new checkpoint; if the block raised, it still holds the old one
```

How (issue 10: a full disk, Ctrl-C or a killed process during a save must not lose the saved work):

1. The files are written into a fresh staging folder *beside* the target (``.<name>.saving-<pid>-<random>``, same
   file system, so renames are atomic), then flushed to disk (``fsync`` of every file and of the folder).
2. Files of the old target that are not part of the checkpoint (the user's notes, logs, ...) are hard-linked (or
   copied) into the staging folder, so the swap keeps them. ``owned`` names (glob patterns) the old files that
   belong to the checkpoint and are dropped when the new one does not write them (e.g. shards of an older save);
   files the new checkpoint writes always replace the old ones.
3. The staging folder and the target are swapped with one ``renameat2(RENAME_EXCHANGE)`` on Linux: at every instant
   ``target`` is the complete old or the complete new folder. Where that call is unavailable (other systems, or a
   file system without it) the target is renamed aside and the staging folder renamed in: for the instant between
   the two renames the target is absent and the complete old folder sits in ``.<name>.old-<pid>-<random>``; the next
   save restores it if the process died there.
4. The old folder's permissions carry over; a working directory inside it follows to the new folder
   (``save_pretrained(".")`` does not leave the process in a deleted folder). The old folder is deleted. On an exception (including ``KeyboardInterrupt``) the staging folder is deleted and
   the target is untouched. A staging or old folder left by a killed process (its pid is gone) is never read by a
   loader (it has a different name) and is removed by the next save into the same target.

5. Saves nest: a save into the staging folder of a save in progress in this process writes straight into it, so
   several writers become one atomic save (the model, its processor and a report land together or not at all)::

       with atomic_save_directory("out", owned=["report.json"]) as staging:
           model.save_pretrained(staging)  # itself atomic_save_directory(staging, ...): writes into `staging`
           processor.save_pretrained(staging)
           (staging / "report.json").write_text(report)

   The nested save's ``owned`` patterns join the outer one's (the old folder's stale files go), and what they name
   in the staging folder (an earlier nested save's) is replaced. ``final_directory(staging)`` is the folder the
   files will end up in (for writers that record their own location).

Loaders need nothing special: they read ``target`` as usual.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import glob
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_save_directory", "clean_stale_saves", "exchange_paths", "final_directory"]

_STAGING = "saving"  # .<name>.saving-<pid>-<token>: being written (or, after the swap, the old folder)
_RETIRED = "old"  # .<name>.old-<pid>-<token>: the old folder, renamed aside (fallback path only)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
#: The saves in progress in this process: staging folder -> (target, ``owned`` patterns of the saves nested in it).
_IN_PROGRESS: dict[Path, tuple[Path, list[str]]] = {}


@contextmanager
def atomic_save_directory(target: str | os.PathLike[str], *, owned: Iterable[str] = ()) -> Iterator[Path]:
    """Stage a checkpoint folder and swap it in whole when the ``with`` block succeeds.

    Args:
        target: The checkpoint folder (created with its parents if missing). A symlink is followed.
        owned: Glob patterns (matched against top-level names) of old files that belong to the checkpoint: dropped
            when the new save does not write them. Every other old entry is kept. Default: only the names the new
            save writes are replaced.

    Yields:
        The empty staging folder to write the checkpoint into (top-level files and sub-folders). When ``target``
        is itself the staging folder of a save in progress in this process, ``target`` (see the module doc, 5).

    Raises:
        ValueError: ``target`` exists and is not a folder.
        PermissionError: ``target`` exists and this process may not write into it (nothing is written).
        OSError: from the writes or renames; the old checkpoint is then untouched and the staging folder removed.
    """
    target = Path(os.path.realpath(target))
    if target in _IN_PROGRESS:  # nested: the enclosing save makes the whole folder atomic
        yield _enter_nested(target, tuple(owned))
        return
    if target.exists() and not target.is_dir():
        raise ValueError(f"save directory: {target} exists and is not a directory")
    if target.exists() and not os.access(target, os.W_OK | os.X_OK):
        # a plain write into it would fail; the swap (which only needs the parent) must not get around that
        raise PermissionError(
            errno.EACCES, "save directory is not writable (make it writable or save elsewhere)", str(target)
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_saves(target)
    staging = _sibling(target, _STAGING)
    staging.mkdir()
    nested: list[str] = []
    _IN_PROGRESS[staging] = (target, nested)
    swapped = False
    try:
        yield staging
        _fsync_tree(staging)
        patterns = (*owned, *nested)
        mode = None
        if target.exists():
            _carry_user_files(target, staging, patterns)
            mode = stat.S_IMODE(os.stat(target).st_mode)  # a private (0o700) folder stays private
            os.chmod(staging, mode | stat.S_IRWXU)  # owner rwx until the user files are moved over
        inside = _working_directory_inside(target)
        swapped = True  # from here on `staging` may hold the old folder: _swap_in cleans up after itself
        _swap_in(staging, target, patterns)
        if mode is not None:
            os.chmod(target, mode)
        if inside is not None:  # the process sat in the old folder, now deleted: follow the checkpoint
            os.chdir(target / inside if (target / inside).is_dir() else target)
    except BaseException:
        if not swapped:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _IN_PROGRESS.pop(staging, None)


def final_directory(path: str | os.PathLike[str]) -> Path:
    """Where ``path`` will be once the atomic saves in progress in this process are swapped in: for a path in the
    staging folder of one, the same path under its target; else ``path`` itself (resolved)."""
    path = Path(os.path.realpath(path))
    for staging, (target, _) in list(_IN_PROGRESS.items()):
        if path.is_relative_to(staging):
            return final_directory(target / path.relative_to(staging))
    return path


def _enter_nested(staging: Path, patterns: tuple[str, ...]) -> Path:
    """A save nested in the one staging into ``staging``: its patterns join the outer save's, and the entries they
    name that an earlier write into ``staging`` left go (as they would in a save of their own)."""
    _IN_PROGRESS[staging][1].extend(patterns)
    for name in os.listdir(staging):
        if _is_owned(name, patterns):
            path = staging / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    return staging


def clean_stale_saves(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging / old folders that killed saves into ``target`` left beside it; returns them.

    A folder whose process is still alive (a save running now) is left alone. If a killed save left no ``target``
    but its complete old folder (fallback swap interrupted between its two renames), that folder becomes ``target``
    again.
    """
    target = Path(os.path.realpath(target))
    removed = []
    for path in sorted(target.parent.glob(f".{glob.escape(target.name)}.*-*-*")):
        kind, pid = _parse_sibling(target, path)
        if kind is None or _alive(pid):
            continue
        if kind == _RETIRED and not target.exists():
            os.rename(path, target)  # the complete old checkpoint goes back in place
            _fsync_dir(target.parent)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def exchange_paths(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        ``True`` when swapped; ``False`` when this system or file system cannot (nothing was changed).

    Raises:
        OSError: any other failure of the call.
    """
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc < 2.28 or another C library
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(first), None, os.fspath(second))


def _working_directory_inside(target: Path) -> str | None:
    """The working directory relative to ``target`` when it is ``target`` or below it (``save_pretrained(".")``);
    else ``None``."""
    try:
        relative = os.path.relpath(os.path.realpath(os.getcwd()), target)
    except (OSError, ValueError):  # no working directory, or another drive on Windows
        return None
    return None if relative == os.pardir or relative.startswith(os.pardir + os.sep) else relative


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _parse_sibling(target: Path, path: Path) -> tuple[str | None, int]:
    """(kind, pid) of a staging/old folder of ``target``; (None, 0) for any other name."""
    rest = path.name.removeprefix(f".{target.name}.")
    kind, _, tail = rest.partition("-")
    pid, _, token = tail.partition("-")
    if kind not in (_STAGING, _RETIRED) or not pid.isdigit() or len(token) != 8 or not path.is_dir():
        return None, 0
    return kind, int(pid)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # this process: maybe another thread's save in progress
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _is_owned(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _carry_user_files(target: Path, staging: Path, patterns: tuple[str, ...]) -> None:
    """Hard-link (or copy) into ``staging`` every entry of ``target`` that the new checkpoint does not replace."""
    written = set(os.listdir(staging))
    for name in os.listdir(target):
        if name in written or _is_owned(name, patterns):
            continue
        source, destination = target / name, staging / name
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, destination, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, destination)
    _fsync_dir(staging)


def _link_or_copy(source: str | Path, destination: str | Path) -> None:
    if os.path.islink(source):
        os.symlink(os.readlink(source), destination)
        return
    try:
        os.link(source, destination)  # no data written: works on a full disk and is instant
    except OSError:
        shutil.copy2(source, destination)


def _swap_in(staging: Path, target: Path, patterns: tuple[str, ...]) -> None:
    """Make ``staging`` the target (one atomic step where possible); delete the old folder."""
    if not target.exists():
        os.rename(staging, target)
        _fsync_dir(target.parent)
        return
    try:
        exchanged = exchange_paths(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if exchanged:
        old = staging  # the swap left the old folder under the staging name
    else:
        old = _sibling(target, _RETIRED)
        try:
            os.rename(target, old)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            os.rename(
                staging, target
            )  # between these two renames `target` is absent; clean_stale_saves recovers
        except OSError:
            os.rename(old, target)
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _fsync_dir(target.parent)
    # Entries a user created in the old folder while the new one was being written: move them over, not lose them.
    for name in os.listdir(old):
        if (
            not (target / name).exists()
            and not (target / name).is_symlink()
            and not _is_owned(name, patterns)
        ):
            os.rename(old / name, target / name)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and every folder to disk, so a crash after the swap cannot lose them."""
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                _fsync_path(path)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # folders cannot be opened for fsync on Windows; NTFS journals the renames
        return
    _fsync_path(folder)


def _fsync_path(path: str | Path) -> None:
    """Flush one file or (POSIX) folder to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
