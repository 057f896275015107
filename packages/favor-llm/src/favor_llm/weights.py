"""Reading weights into modules strictly: safetensors files of a checkpoint (local or a Hub snapshot), by key
prefix, with a ``ValueError`` naming every missing, unexpected or wrongly shaped tensor."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

__all__ = [
    "WEIGHTS_INDEX_NAME",
    "WEIGHTS_NAME",
    "assign_strict",
    "is_meta",
    "key_index",
    "load_module_weights",
    "local_or_download",
    "part_fingerprint",
    "part_id",
    "read_tensors",
    "resolve_checkpoint_files",
    "short_list",
]

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
#: A content id written beside a frozen part's weights at every save, so that a part rewritten with tensors of the
#: same names and shapes (a merged save into the folder: LoRA merged into the LLM) gets a new fingerprint, while
#: writing the same weights again (a resumed training run) keeps it.
PART_ID_NAME = "favor_part_id.txt"
#: Where a Whisper encoder's keys may sit in a checkpoint (its own, ``WhisperModel``'s, ``WhisperForConditional
#: Generation``'s, a FAVOR model's).
AUDIO_PREFIX_CANDIDATES = ("", "encoder.", "model.encoder.", "audio_encoders.0.encoder.")


def local_or_download(name_or_path: str | Path, filenames: Iterable[str] | None = None) -> Path:
    """A local directory, or a snapshot of a Hub repo (only safetensors / json files)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"name_or_path: {path} is a file; expected a directory or a Hub repo id")
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                str(name_or_path), allow_patterns=list(filenames or ["*.json", "*.safetensors"])
            )
        )
    except Exception as err:  # offline, missing repo, ...: one clear error
        raise ValueError(
            f"name_or_path: {name_or_path!r} is not a local directory and could not be fetched ({err})"
        ) from err


def part_id(tensors: dict[str, torch.Tensor]) -> str:
    """The content id of a frozen part's weights (written to ``PART_ID_NAME`` beside them): a hash of every tensor's
    name, dtype, shape and 257 evenly spaced elements (cheap for a 13B LLM; a dense change such as a merged LoRA
    changes it, see `part_fingerprint`)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        flat = tensors[key].detach().reshape(-1)
        picks = torch.linspace(0, max(flat.numel() - 1, 0), min(flat.numel(), 257)).long().to(flat.device)
        sample = flat[picks].cpu().contiguous()
        digest.update(f"{key}\0{sample.dtype}\0{tuple(tensors[key].shape)}\0".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes() if sample.numel() else b"")
    return digest.hexdigest()


def part_fingerprint(name_or_path: str | Path) -> str | None:
    """A fingerprint of the frozen part in a local directory: a hash of its id file (``PART_ID_NAME``, see `part_id`) and of each
    safetensors file's name, size and header (names, dtypes, shapes, offsets). Cheap (no tensor data read) and
    unchanged by copying the folder. ``None`` for a Hub repo id (not a local directory)."""
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    if (path / PART_ID_NAME).is_file():
        digest.update((path / PART_ID_NAME).read_bytes())
    for file in sorted(path.glob("*.safetensors")):
        with open(file, "rb") as handle:
            head = handle.read(8)
            header = handle.read(int.from_bytes(head, "little")) if len(head) == 8 else b""
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode() + header)
    return digest.hexdigest()[:32]


def resolve_checkpoint_files(name_or_path: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint (a single ``model.safetensors`` or the shards of an index)."""
    root = local_or_download(name_or_path)
    index = root / WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [root / s for s in shards]
    single = root / WEIGHTS_NAME
    if single.is_file():
        return [single]
    found = sorted(root.glob("*.safetensors"))
    if found:
        return found
    raise ValueError(
        f"name_or_path: no safetensors weights in {root} (expected {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME})"
    )


def key_index(files: list[Path]) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for f in files:
        with _opened(f) as handle:
            for key in handle.keys():
                index[key] = f
    return index


@contextlib.contextmanager
def _opened(file: Path) -> Iterator[Any]:
    """``safe_open(file)``, with a truncated or corrupt file a ``ValueError`` naming it (safetensors' own error
    names no file)."""
    from safetensors import SafetensorError

    try:
        with safe_open(str(file), framework="pt") as handle:
            yield handle
    except SafetensorError as err:
        raise ValueError(
            f"{file}: not a readable safetensors file ({err}); it is truncated or damaged: save or download it again"
        ) from err


def read_tensors(index: dict[str, Path], keys: Iterable[str]) -> dict[str, torch.Tensor]:
    by_file: dict[Path, list[str]] = {}
    for k in keys:
        by_file.setdefault(index[k], []).append(k)
    out = {}
    for f, ks in by_file.items():
        with _opened(f) as handle:
            for k in ks:
                out[k] = handle.get_tensor(k)
    return out


def assign_strict(module: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Load ``tensors`` into ``module`` requiring exactly its state-dict keys and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{what}: weights do not match the model: missing {short_list(missing)}, unexpected {short_list(unexpected)}"
        )
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in tensors.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise ValueError(f"{what}: shape mismatch for {short_list(wrong)}")
    module.load_state_dict(tensors, strict=True, assign=is_meta(module))


def is_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def short_list(items: list[str], limit: int = 8) -> str:
    if not items:
        return "[]"
    head = ", ".join(items[:limit])
    return f"[{head}{', ...' if len(items) > limit else ''}] ({len(items)})"


def load_module_weights(
    module: nn.Module, name_or_path: str | Path, prefix: str | None = None, what: str = ""
) -> str:
    """Load ``module``'s weights from a (possibly bigger) checkpoint whose keys are ``prefix + module key``.

    With ``prefix=None`` the prefix is found among ``""``, ``"encoder."``, ``"model.encoder."``, ... as the one
    under which every key of the module exists. Extra tensors in the checkpoint are ignored (e.g. the LLM in an
    InstructBLIP checkpoint); a missing or wrongly shaped tensor raises ``ValueError``.

    Returns:
        The prefix used.
    """
    what = what or type(module).__name__
    index = key_index(resolve_checkpoint_files(name_or_path))
    expected = list(module.state_dict())
    candidates = [prefix] if prefix is not None else list(AUDIO_PREFIX_CANDIDATES)
    for p in candidates:
        if all(p + k in index for k in expected):
            tensors = read_tensors(index, [p + k for k in expected])
            assign_strict(module, {k[len(p) :]: v for k, v in tensors.items()}, f"{what} from {name_or_path}")
            return p
    best = max(candidates, key=lambda p: sum(p + k in index for k in expected))
    missing = [best + k for k in expected if best + k not in index]
    raise ValueError(
        f"{what}: {name_or_path} lacks {len(missing)} of the {len(expected)} weights it needs "
        f"(prefix {best!r}): {short_list(missing)}"
    )
