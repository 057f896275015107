"""favor-llm: the FAVOR audio-visual LLM (Sun et al., 2023, arXiv 2310.05863) as a transformers model.

- `FavorConfig` / `FavorModel`: a `FavorMediaEncoder` (frozen vision + audio encoders, trainable audio
  projections, the temporal synchroniser of `favor_avsync`, the causal Q-Former of `favor_qformer`), a linear
  projection and a causal LM with LoRA; ``AutoConfig`` / ``AutoModel`` know ``model_type="favor"``. The parts are
  declared once in `favor_llm.components`.
- `FavorProcessor` (a `transformers.ProcessorMixin`): questions + media (paths, bytes, `favor_avsync.MediaClip`,
  arrays) -> model inputs; ``AutoProcessor`` knows it for ``model_type="favor"``.
- `convert_released_checkpoint`: a released FAVOR checkpoint -> a `FavorModel` directory (``favor convert``).
- `favor_llm.testing.tiny_model_and_processor`: a complete tiny FAVOR built offline.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor

from .components import Component, components
from .configuration import FavorConfig
from .convert import convert_released_checkpoint
from .layout import AVLayout, av_tokens_per_minute, num_windows
from .media_encoder import FavorMediaEncoder
from .modeling import FavorModel
from .outputs import FavorAVOutput, FavorOutput
from .processing import FavorProcessor
from .stats import describe, parameter_counts

AutoConfig.register("favor", FavorConfig, exist_ok=True)
AutoModel.register(FavorConfig, FavorModel, exist_ok=True)
AutoModelForCausalLM.register(FavorConfig, FavorModel, exist_ok=True)
AutoProcessor.register(FavorConfig, FavorProcessor, exist_ok=True)

__all__ = [
    "AVLayout",
    "Component",
    "FavorAVOutput",
    "FavorConfig",
    "FavorMediaEncoder",
    "FavorModel",
    "FavorOutput",
    "FavorProcessor",
    "av_tokens_per_minute",
    "components",
    "convert_released_checkpoint",
    "describe",
    "num_windows",
    "parameter_counts",
]
__version__ = "0.1.0"
