"""favor_qformer: the block-causal window Q-Former of FAVOR (Sun et al., 2023, arXiv 2310.05863), on its own.

Public API: ``CausalQFormerConfig``, ``CausalQFormer`` (+ ``CausalQFormerOutput``), ``BlockCausalAttention``,
``block_causal_mask`` / ``block_causal_attn_bias``, ``diversity_loss`` and ``query_similarity``, ``count_windows``; and
``favor_qformer.saving.atomic_save_directory``, the atomic checkpoint-folder writer behind ``save_pretrained``, for any
checkpoint writer. Importing it does not import transformers or xformers.
"""

from .attention import BlockCausalAttention, MultiHeadAttention
from .config import CausalQFormerConfig
from .diversity import diversity_loss, query_similarity
from .masks import block_causal_additive_bias, block_causal_attn_bias, block_causal_mask
from .model import CausalQFormer, CausalQFormerOutput
from .windows import count_windows

__all__ = [
    "BlockCausalAttention",
    "CausalQFormer",
    "CausalQFormerConfig",
    "CausalQFormerOutput",
    "MultiHeadAttention",
    "block_causal_additive_bias",
    "block_causal_attn_bias",
    "block_causal_mask",
    "count_windows",
    "diversity_loss",
    "query_similarity",
]

__version__ = "0.1.0"
