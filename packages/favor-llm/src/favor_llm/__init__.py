"""favor-llm: the FAVOR audio-visual LLM (Sun et al., 2023, arXiv 2310.05863) as a transformers model.

- `FavorConfig` / `FavorModel`: a `FavorMediaEncoder` (frozen vision + audio encoders, trainable audio
  projections, the temporal synchroniser of `favor_avsync`, the causal Q-Former of `favor_qformer`), a linear
  projection and a causal LM with LoRA; ``AutoConfig`` / ``AutoModel`` know ``model_type="favor"``. The parts are
  declared once in `favor_llm.components`.
- `FavorProcessor` (a `transformers.ProcessorMixin`): questions + media (paths, bytes, `favor_avsync.MediaClip`,
  arrays) -> model inputs; ``AutoProcessor`` knows it for ``model_type="favor"``.
- `convert_released_checkpoint`: a released FAVOR checkpoint -> a `FavorModel` directory (``favor convert``).
- `favor_llm.testing.tiny_model_and_processor`: a complete tiny FAVOR built offline.

``import favor_llm`` imports neither torch nor transformers: each name below imports its module on first use
(`favor_llm.lazy_exports`), and the Auto classes learn ``model_type="favor"`` as soon as transformers' Auto package
is imported (`favor_llm.auto_classes`), so ``favor --help`` answers at once.
"""

from typing import TYPE_CHECKING

from .auto_classes import register_with_transformers
from .components import Component, components  # eager: `components` is also the name of a submodule
from .lazy_exports import lazy_exports

if TYPE_CHECKING:
    from .configuration import FavorConfig
    from .convert import convert_released_checkpoint
    from .layout import AVLayout, av_tokens_per_minute, num_windows
    from .media_encoder import FavorMediaEncoder
    from .modeling import FavorModel
    from .outputs import FavorAVOutput, FavorOutput
    from .processing import FavorProcessor
    from .stats import describe, parameter_counts

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".configuration": ("FavorConfig",),
        ".convert": ("convert_released_checkpoint",),
        ".layout": ("AVLayout", "av_tokens_per_minute", "num_windows"),
        ".media_encoder": ("FavorMediaEncoder",),
        ".modeling": ("FavorModel",),
        ".outputs": ("FavorAVOutput", "FavorOutput"),
        ".processing": ("FavorProcessor",),
        ".stats": ("describe", "parameter_counts"),
    },
)

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

register_with_transformers()
