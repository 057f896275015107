"""Saving and loading `FavorProcessor` through `transformers.ProcessorMixin` (the layout is in
`favor_llm.processing`'s module docstring): `FavorProcessorSaving` adds the parts ProcessorMixin does not know
(extra audio feature extractors, the optional Q-Former tokenizer, the AV layout and templates)."""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PROCESSOR_CONFIG_NAME", "QFORMER_TOKENIZER_DIR", "FavorProcessorSaving"]

#: transformers' processor file (``transformers.utils.PROCESSOR_NAME``).
PROCESSOR_CONFIG_NAME = "processor_config.json"
QFORMER_TOKENIZER_DIR = "qformer_tokenizer"


class FavorProcessorSaving:
    """Mixed into `FavorProcessor` before `transformers.ProcessorMixin` (whose methods ``super()`` reaches)."""

    def to_dict(self) -> dict[str, Any]:
        """The contents of ``processor_config.json``: the image processor and the feature extractors as nested
        dicts (transformers' layout for ``image_processor`` / ``feature_extractor``), the layout, placeholder,
        templates and which optional parts exist. Tokenizers and the chat template live in their own files."""
        out: dict[str, Any] = {
            "processor_class": type(self).__name__,
            "image_processor": self.image_processor.to_dict(),
            # The exact class: AutoImageProcessor picks a PIL or torchvision backend by what is installed.
            "image_processor_class": type(self.image_processor).__name__,
            "feature_extractor": self.feature_extractors[0].to_dict(),
            "extra_feature_extractors": [fe.to_dict() for fe in self.feature_extractors[1:]],
            "has_qformer_tokenizer": self.qformer_tokenizer is not None,
            "layout": self.layout.to_dict(),
            "av_token": self.av_token,
            "prompt_template": self.prompt_template,
            "text_only_template": self.text_only_template,
            "qformer_max_length": self.qformer_max_length,
        }
        if "auto_map" in self.__dict__:
            out["auto_map"] = self.__dict__["auto_map"]
        return json.loads(json.dumps(out, default=_json_default))

    def save_pretrained(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any
    ) -> list[str]:
        """Write the processor so that ``FavorProcessor.from_pretrained`` / ``AutoProcessor.from_pretrained`` load it.

        `ProcessorMixin.save_pretrained` writes the tokenizer (top level), ``processor_config.json`` (`to_dict`)
        and the chat template; the Q-Former tokenizer, when there is one, goes to ``qformer_tokenizer/``.
        ``push_to_hub=True`` then uploads the directory (``repo_id``, ``commit_message``, ``token``, ... as in
        `transformers.utils.PushToHubMixin.push_to_hub`).

        Returns:
            the paths of the files written (``processor_config.json`` first).
        """
        from favor_qformer.saving import atomic_save_directory

        root = Path(save_directory)
        # Atomic (issue 10): written into a staging folder beside `root` and swapped in whole; a model checkpoint
        # saved in the same folder is kept. The old Q-Former tokenizer folder goes when the new save has none.
        with atomic_save_directory(root, owned=[QFORMER_TOKENIZER_DIR]) as staging:
            written = list(super().save_pretrained(str(staging)))
            if self.qformer_tokenizer is not None:
                self.qformer_tokenizer.save_pretrained(str(staging / QFORMER_TOKENIZER_DIR))
        files = [str(root / Path(f).resolve().relative_to(staging.resolve())) for f in written]
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", root.name)
            kwargs.pop("max_shard_size", None)
            self.push_to_hub(repo_id, **kwargs)
        return files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """Load a processor from a local directory or a Hub repo id (``revision``, ``token``, ``cache_dir``,
        ``local_files_only``, ``subfolder`` as in transformers); ``kwargs`` that are ``__init__`` arguments (e.g.
        ``qformer_max_length``) override the saved values."""
        path = Path(pretrained_model_name_or_path)
        local = path / kwargs.get("subfolder", "")
        if not path.exists() and (
            path.is_absolute() or str(pretrained_model_name_or_path).startswith((".", "~"))
        ):
            raise ValueError(f"pretrained_model_name_or_path: the directory {path} does not exist")
        if local.is_dir() and not (local / PROCESSOR_CONFIG_NAME).is_file():
            raise ValueError(
                f"pretrained_model_name_or_path: {local} has no {PROCESSOR_CONFIG_NAME}; is it a directory written by "
                "FavorProcessor.save_pretrained?"
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _get_arguments_from_pretrained(
        cls, pretrained_model_name_or_path: Any, processor_dict: dict | None = None, **kwargs: Any
    ) -> list[Any]:
        """ProcessorMixin loads the standard sub-processors (``tokenizer``, ``image_processor``,
        ``feature_extractor``); this adds the extra feature extractors (from their nested dicts in
        ``processor_config.json``, as transformers builds non-primary sub-processors) and the Q-Former tokenizer
        (from ``qformer_tokenizer/``). The Q-Former tokenizer reaches ``__init__`` through ``processor_dict``,
        whose entries that are ``__init__`` arguments ``from_args_and_dict`` passes on."""
        processor_dict = {} if processor_dict is None else processor_dict
        tokenizer, image_processor, feature_extractor = super()._get_arguments_from_pretrained(
            pretrained_model_name_or_path, processor_dict, **kwargs
        )
        wanted = processor_dict.get("image_processor_class")
        if wanted and type(image_processor).__name__ != wanted:
            image_processor = cls.get_possibly_dynamic_module(wanted).from_pretrained(
                pretrained_model_name_or_path, **kwargs
            )
        extractors = [feature_extractor]
        for k, config in enumerate(processor_dict.get("extra_feature_extractors", []), start=1):
            if not isinstance(config, dict) or "feature_extractor_type" not in config:
                raise ValueError(
                    f"extra_feature_extractors[{k - 1}] in {PROCESSOR_CONFIG_NAME}: expected a dict with "
                    f"'feature_extractor_type', got {config!r}"
                )
            fe_class = cls.get_possibly_dynamic_module(config["feature_extractor_type"])
            extractors.append(
                fe_class(**{k2: v for k2, v in config.items() if k2 != "feature_extractor_type"})
            )
        if processor_dict.get("has_qformer_tokenizer"):
            subfolder = kwargs.pop("subfolder", "")
            processor_dict["qformer_tokenizer"] = cls._load_tokenizer_from_pretrained(
                "qformer_tokenizer", pretrained_model_name_or_path, subfolder=subfolder, **kwargs
            )
        return [tokenizer, image_processor, extractors]


def _json_default(value: Any) -> Any:
    """JSON for what sub-processor dicts may hold: numpy arrays and scalars, enums (PIL resampling), tuples."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, enum.Enum):  # e.g. PIL's Resampling
        return value.value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
