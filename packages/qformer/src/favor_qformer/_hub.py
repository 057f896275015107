"""``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``: ``config.json`` + ``model.safetensors``.

This module does not import ``model`` (no import cycle): it works on any ``torch.nn.Module`` that has a
``CausalQFormerConfig`` as ``config`` and a strict ``load_native_state_dict`` (the ``QFormerCheckpointable``
protocol); ``CausalQFormer``'s methods pass themselves / their class in.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Protocol, TypeVar

import safetensors.torch
import torch
from safetensors import SafetensorError

from .config import CausalQFormerConfig
from .saving import atomic_save_directory

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME)


class QFormerCheckpointable(Protocol):
    """What this module needs of a model (``CausalQFormer`` is one)."""

    config: CausalQFormerConfig

    def __init__(self, config: CausalQFormerConfig | None = None) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_native_state_dict(self, state_dict: dict[str, torch.Tensor], source: str = "load") -> None: ...


ModelT = TypeVar("ModelT", bound=QFormerCheckpointable)


def save_pretrained(model: QFormerCheckpointable, directory: str | Path) -> Path:
    """Write the checkpoint atomically (``saving.atomic_save_directory``): ``directory`` holds the complete old or
    the complete new checkpoint at every instant; other files in it are kept."""
    directory = Path(directory)
    tensors = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    with atomic_save_directory(directory, owned=CHECKPOINT_FILES) as staging:
        # Called through the module so a test can make the write fail half-way.
        safetensors.torch.save_file(
            tensors, str(staging / WEIGHTS_NAME), metadata={"format": "pt", "library": "favor_qformer"}
        )
        model.config.save(staging / CONFIG_NAME)
    return directory


HUB_KWARGS = ("token", "cache_dir", "local_files_only", "force_download")


def _resolve(
    directory_or_repo_id: str | Path, revision: str | None, hub_kwargs: dict[str, Any]
) -> tuple[Path, Path]:
    local = Path(directory_or_repo_id)
    if local.is_dir():
        paths = (local / CONFIG_NAME, local / WEIGHTS_NAME)
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(
                f"directory_or_repo_id: {local} lacks {missing} (expected {CONFIG_NAME} and {WEIGHTS_NAME})"
            )
        return paths
    from huggingface_hub import hf_hub_download

    unknown = sorted(set(hub_kwargs) - set(HUB_KWARGS))
    if unknown:
        raise ValueError(
            f"from_pretrained: unknown keyword arguments {unknown}; expected some of {list(HUB_KWARGS)}"
        )
    repo = str(directory_or_repo_id)
    try:
        return (
            Path(hf_hub_download(repo, CONFIG_NAME, revision=revision, **hub_kwargs)),
            Path(hf_hub_download(repo, WEIGHTS_NAME, revision=revision, **hub_kwargs)),
        )
    except Exception as error:
        raise ValueError(
            f"directory_or_repo_id: {repo!r} is neither a local directory nor a reachable Hub repository with "
            f"{CONFIG_NAME} and {WEIGHTS_NAME} ({type(error).__name__}: {error})"
        ) from error


def read_config(path: Path) -> CausalQFormerConfig:
    """``config.json`` as a config; bad JSON or fields raise ``ValueError`` naming the file."""
    try:
        return CausalQFormerConfig.load(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a valid JSON config ({error}); re-save the checkpoint") from error
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from error


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a corrupt or truncated file raises ``ValueError`` naming it."""
    try:
        return safetensors.torch.load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{path}: corrupt or truncated safetensors file ({error}); re-save or re-download the checkpoint"
        ) from error


def from_pretrained(
    cls: type[ModelT],
    directory_or_repo_id: str | Path,
    *,
    revision: str | None,
    dtype: torch.dtype | None,
    hub_kwargs: dict[str, Any] | None = None,
) -> ModelT:
    """Strict load; each floating tensor keeps its stored dtype (``dtype`` casts all instead); eval mode."""
    config_path, weights_path = _resolve(directory_or_repo_id, revision, hub_kwargs or {})
    config = read_config(config_path)
    tensors = read_weights(weights_path)
    model = cls(config)
    if dtype is not None:
        model.to(dtype)
    else:  # per tensor, before the copy, so a float64 tensor is not squeezed through float32
        _match_stored_dtypes(model, tensors)
    model.load_native_state_dict(tensors, source=f"from_pretrained({str(directory_or_repo_id)!r})")
    model.eval()  # as transformers' from_pretrained: dropout off, outputs equal the saved model's
    return model


def _match_stored_dtypes(model: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Give each floating parameter/buffer that is in ``tensors`` the stored tensor's dtype."""
    for name, value in [*model.named_parameters(), *model.named_buffers()]:
        stored = tensors.get(name)
        if stored is not None and stored.is_floating_point() and value.is_floating_point():
            if value.dtype != stored.dtype:
                value.data = value.data.to(stored.dtype)


def push_to_hub(
    model: QFormerCheckpointable,
    repo_id: str,
    *,
    private: bool | None,
    token: str | None,
    commit_message: str | None,
) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message or "Upload favor_qformer.CausalQFormer",
        )
    return str(getattr(info, "commit_url", info))
