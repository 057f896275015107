"""Saves never lose data (issue 10, items 1 and 4): atomic checkpoint folders, failing and killed saves, round trips
that keep each tensor's dtype and return eval mode, corrupt files named in the error."""

from __future__ import annotations

import os
import resource
import shutil
import signal
from pathlib import Path

import pytest
import safetensors.torch
import torch
from qformer_helpers import tiny_model

import favor_qformer.saving as saving
from crash_helpers import count_calls, in_child, killed_at, leftovers
from favor_qformer import CausalQFormer
from favor_qformer.saving import atomic_save_directory, clean_stale_saves


def _same(model: CausalQFormer, other: CausalQFormer) -> bool:
    if model.config.to_dict() != other.config.to_dict():
        return False
    theirs = other.state_dict()
    return all(torch.equal(value, theirs[key]) for key, value in model.state_dict().items())


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


# ----- the utility ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_swap_replaces_the_checkpoint_and_keeps_user_files(tmp_path, monkeypatch, exchange):
    if not exchange:  # the portable path (no RENAME_EXCHANGE): same result
        monkeypatch.setattr(saving, "exchange_paths", lambda first, second: False)
    target = tmp_path / "ckpt"
    target.mkdir()
    _write(
        target, {"model-1.bin": "old shard", "config.json": "old", "notes.txt": "mine", "logs/run.txt": "log"}
    )
    with atomic_save_directory(target, owned=["model-*.bin", "config.json"]) as staging:
        assert staging.parent == target.parent and staging != target
        _write(staging, {"config.json": "new", "weights.bin": "new weights"})
        assert (target / "config.json").read_text() == "old"  # nothing visible before the block ends
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "logs", "notes.txt", "weights.bin"]
    assert (target / "config.json").read_text() == "new"
    assert (target / "notes.txt").read_text() == "mine" and (target / "logs/run.txt").read_text() == "log"
    assert leftovers(target) == []


def test_an_exception_in_the_block_leaves_the_old_folder_and_no_temporary_files(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    _write(target, {"config.json": "old"})
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_save_directory(target) as staging:
            _write(staging, {"config.json": "half"})
            raise RuntimeError("disk on fire")
    assert [p.name for p in target.iterdir()] == ["config.json"] and (
        target / "config.json"
    ).read_text() == "old"
    assert leftovers(target) == []


def test_first_save_creates_the_folder_and_a_file_target_is_refused(tmp_path):
    with atomic_save_directory(tmp_path / "a" / "b") as staging:
        _write(staging, {"x": "1"})
    assert (tmp_path / "a" / "b" / "x").read_text() == "1"
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        with atomic_save_directory(tmp_path / "file"):
            pass


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_saving_into_the_working_directory_keeps_it_usable_and_the_folder_keeps_its_mode(
    tmp_path, monkeypatch, exchange
):
    """``save_pretrained(".")`` (or into a folder holding the working directory) swaps the folder: the process must
    not be left in the deleted old folder (``os.getcwd()`` raised FileNotFoundError, relative paths broke), and a
    private (0o700) checkpoint folder must not become world-readable (it came back 0o755)."""
    if not exchange:
        monkeypatch.setattr(saving, "exchange_paths", lambda first, second: False)
    target = tmp_path / "ckpt"
    (target / "sub").mkdir(parents=True)
    target.chmod(0o700)
    monkeypatch.chdir(target / "sub")
    with atomic_save_directory("..") as staging:
        _write(staging, {"config.json": "new"})
    assert Path(os.getcwd()) == target / "sub"
    assert Path("../config.json").read_text() == "new"
    assert (target.stat().st_mode & 0o777) == 0o700
    assert leftovers(target) == []


def test_a_folder_the_user_cannot_write_to_is_not_replaced(tmp_path, monkeypatch):
    """A plain write into a read-only folder fails; the swap (which only needs the parent) must not get around it
    (it replaced the folder's contents). ``os.access`` is patched: the suite may run as root."""
    target = tmp_path / "ckpt"
    target.mkdir()
    _write(target, {"config.json": "old"})
    monkeypatch.setattr(saving.os, "access", lambda path, mode: Path(path) != target)
    with pytest.raises(PermissionError, match="not writable"):
        with atomic_save_directory(target) as staging:
            _write(staging, {"config.json": "new"})
    assert (target / "config.json").read_text() == "old" and leftovers(target) == []


def test_saves_nested_in_a_save_write_into_its_staging_folder_and_land_with_it(tmp_path):
    """A save into the staging folder of a save in progress (``model.save_pretrained(staging)`` inside the block)
    writes straight into it: nothing shows before the outer block ends; the nested save's ``owned`` patterns drop
    the old folder's stale files (and what an earlier nested save wrote); ``final_directory`` names the target."""
    target = tmp_path / "ckpt"
    target.mkdir()
    _write(target, {"model-1.bin": "old shard", "config.json": "old", "notes.txt": "mine"})
    with atomic_save_directory(target, owned=["report.txt"]) as staging:
        with atomic_save_directory(staging, owned=["model-*.bin"]) as inner:
            assert inner == staging
            _write(inner, {"model-2.bin": "first try"})
        with atomic_save_directory(staging, owned=["model-*.bin", "config.json"]) as inner:
            assert sorted(os.listdir(inner)) == []  # the first nested save's shard is replaced
            _write(inner, {"model-3.bin": "new", "config.json": "new"})
        _write(staging, {"report.txt": "done"})
        assert saving.final_directory(staging / "sub") == target / "sub"
        assert sorted(os.listdir(target)) == ["config.json", "model-1.bin", "notes.txt"]
    assert sorted(os.listdir(target)) == ["config.json", "model-3.bin", "notes.txt", "report.txt"]
    assert saving.final_directory(target) == target and leftovers(target) == []


def test_a_nested_save_that_fails_leaves_the_old_folder(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    _write(target, {"config.json": "old"})
    with pytest.raises(RuntimeError, match="second writer failed"):
        with atomic_save_directory(target) as staging:
            _write(staging, {"a.txt": "first writer"})
            with atomic_save_directory(staging) as inner:
                _write(inner, {"config.json": "half"})
                raise RuntimeError("second writer failed")
    assert os.listdir(target) == ["config.json"] and (target / "config.json").read_text() == "old"
    assert leftovers(target) == [] and saving.final_directory(staging) == staging  # no longer in progress


def test_stale_folders_of_a_dead_process_are_ignored_then_cleaned(tmp_path):
    target = tmp_path / "ckpt"
    tiny_model().save_pretrained(target)
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)  # a pid that no longer runs
    stale = tmp_path / f".ckpt.saving-{dead}-0123abcd"
    _write(stale, {"config.json": "{broken", "model.safetensors": "junk"})
    CausalQFormer.from_pretrained(target)  # loaders never look at it
    assert clean_stale_saves(target) == [stale] and leftovers(target) == []

    # Killed between the two renames of the portable path: the old folder is restored by the next save.
    retired = tmp_path / f".ckpt.old-{dead}-0123abcd"
    os.rename(target, retired)
    model = tiny_model()
    with atomic_save_directory(target) as staging:
        assert (target / "config.json").is_file()  # restored before staging the new save
        model.save_pretrained(staging)
    assert _same(CausalQFormer.from_pretrained(target), model) and leftovers(target) == []


# ----- CausalQFormer.save_pretrained --------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    """(folder with an old checkpoint and a user file, old model, new model of another config)."""
    old, new = tiny_model(), tiny_model(intermediate_size=24, num_queries=3)
    target = tmp_path / "ckpt"
    old.save_pretrained(target)
    (target / "README.md").write_text("my notes")
    return target, old, new


def test_save_replaces_a_checkpoint_and_keeps_the_users_files(saved):
    target, _, new = saved
    new.save_pretrained(target)
    assert _same(CausalQFormer.from_pretrained(target), new)
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert leftovers(target) == []


def test_exception_while_writing_the_weights_keeps_the_old_checkpoint(saved, monkeypatch):
    target, old, new = saved
    real = safetensors.torch.save_file

    def half_then_fail(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:
            handle.truncate(os.path.getsize(filename) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        new.save_pretrained(target)
    assert _same(CausalQFormer.from_pretrained(target), old)
    assert (target / "README.md").read_text() == "my notes" and leftovers(target) == []


def test_size_limit_on_written_files_keeps_the_old_checkpoint(saved):
    """A full disk, simulated by RLIMIT_FSIZE in a subprocess: writes past the limit fail with EFBIG."""
    target, old, new = saved
    size = (target / "model.safetensors").stat().st_size

    def save_under_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, resource.RLIM_INFINITY))
        new.save_pretrained(target)

    assert in_child(save_under_limit) == 3  # the child's save raised
    assert _same(CausalQFormer.from_pretrained(target), old)
    assert (target / "README.md").read_text() == "my notes" and leftovers(target) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_save_killed_at_any_file_system_call_leaves_old_or_new(saved, tmp_path, monkeypatch, exchange):
    """SIGKILL before each of the ~100 file-system calls of a save. With renameat2 the folder is old or new at
    every instant; on the portable path it can be absent between two renames, and what the next save does first
    (``clean_stale_saves``) restores the old one."""
    if not exchange:
        monkeypatch.setattr(saving, "exchange_paths", lambda first, second: False)
    target, old, new = saved
    probe = tmp_path / "probe"
    shutil.copytree(target, probe)  # the same save, unkilled, counts the calls
    total = count_calls(lambda: new.save_pretrained(probe), tmp_path / "calls")
    assert total > 10
    outcomes = []
    for kill_at in range(1, total + 1):
        assert (
            in_child(lambda k=kill_at: killed_at(lambda: new.save_pretrained(target), k)) == -signal.SIGKILL
        )
        if not exchange:
            clean_stale_saves(target)
        loaded = CausalQFormer.from_pretrained(target)  # never broken, never missing
        outcomes.append("old" if _same(loaded, old) else "new" if _same(loaded, new) else "mixed")
        assert (target / "README.md").read_text() == "my notes"
        if outcomes[-1] == "new":
            old.save_pretrained(target)  # back to the old one for the next kill point
    assert "mixed" not in outcomes and "old" in outcomes and "new" in outcomes, outcomes
    old.save_pretrained(target)
    assert leftovers(target) == []  # the next save removed what the killed ones left


# ----- round trips --------------------------------------------------------------------------------------------


def test_from_pretrained_keeps_each_dtype_and_returns_eval_mode(tmp_path):
    model = tiny_model().train()
    model.layers[0].to(torch.bfloat16)
    model.input_layernorm.to(torch.float64)
    model.save_pretrained(tmp_path)
    loaded = CausalQFormer.from_pretrained(tmp_path)
    assert not loaded.training and not any(m.training for m in loaded.modules())
    want = {k: v for k, v in model.state_dict().items()}
    got = loaded.state_dict()
    assert {k: v.dtype for k, v in got.items()} == {k: v.dtype for k, v in want.items()}
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert {v.dtype for v in got.values()} >= {torch.bfloat16, torch.float64, torch.float32}

    cast = CausalQFormer.from_pretrained(tmp_path, dtype=torch.float32)
    assert {p.dtype for p in cast.parameters()} == {torch.float32} and not cast.training


def test_dropout_is_off_after_loading(tmp_path):
    model = tiny_model(dropout=0.5).eval()
    model.save_pretrained(tmp_path)
    features = torch.randn(1, 5, 2, 12)
    with torch.no_grad():
        torch.testing.assert_close(
            CausalQFormer.from_pretrained(tmp_path)(features).tokens, model(features).tokens
        )


def test_truncated_or_corrupt_files_are_value_errors_naming_the_file(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a real file cut in the middle (an interrupted copy)
    with pytest.raises(ValueError, match=r"model\.safetensors: corrupt or truncated safetensors"):
        CausalQFormer.from_pretrained(tmp_path)
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ValueError, match=r"model\.safetensors: corrupt or truncated"):
        CausalQFormer.from_pretrained(tmp_path)
    weights.write_bytes(data)
    (tmp_path / "config.json").write_text('{"hidden_size": 16,')
    with pytest.raises(ValueError, match=r"config\.json: not a valid JSON config"):
        CausalQFormer.from_pretrained(tmp_path)


def test_hub_keywords_reach_the_download_and_unknown_ones_are_refused(tmp_path):
    with pytest.raises(
        ValueError, match=r"'nobody/no-such-qformer' is neither a local directory nor a reachable"
    ):
        CausalQFormer.from_pretrained("nobody/no-such-qformer", local_files_only=True, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown keyword arguments \['map_location'\]"):
        CausalQFormer.from_pretrained("nobody/no-such-qformer", map_location="cpu")
