"""``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``: ``config.json`` + ``model.safetensors``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .config import CausalQFormerConfig

if TYPE_CHECKING:
    from .model import CausalQFormer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(model: CausalQFormer, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory / CONFIG_NAME)
    tensors = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "favor_qformer"})
    return directory


def _resolve(directory_or_repo_id: str | Path, revision: str | None) -> tuple[Path, Path]:
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

    repo = str(directory_or_repo_id)
    try:
        return (
            Path(hf_hub_download(repo, CONFIG_NAME, revision=revision)),
            Path(hf_hub_download(repo, WEIGHTS_NAME, revision=revision)),
        )
    except Exception as error:
        raise ValueError(
            f"directory_or_repo_id: {repo!r} is neither a local directory nor a reachable Hub repository with "
            f"{CONFIG_NAME} and {WEIGHTS_NAME} ({type(error).__name__}: {error})"
        ) from error


def from_pretrained(
    cls: type[CausalQFormer],
    directory_or_repo_id: str | Path,
    *,
    revision: str | None,
    dtype: torch.dtype | None,
) -> CausalQFormer:
    config_path, weights_path = _resolve(directory_or_repo_id, revision)
    config = CausalQFormerConfig.load(config_path)
    tensors = load_file(str(weights_path))
    if dtype is None:
        with safe_open(str(weights_path), framework="pt") as handle:
            floating = [tensors[k].dtype for k in handle.keys() if tensors[k].is_floating_point()]
        dtype = floating[0] if floating else torch.float32
    model = cls(config).to(dtype)
    model.load_native_state_dict(tensors, source=f"from_pretrained({str(directory_or_repo_id)!r})")
    return model


def push_to_hub(
    model: CausalQFormer, repo_id: str, *, private: bool | None, token: str | None, commit_message: str | None
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
