"""Building blocks shared by the Thinker and the Talker."""

from omni_model.modules.attention import Attention, KVCache
from omni_model.modules.mlp import MoE, SwiGLU
from omni_model.modules.norm import RMSNorm
from omni_model.modules.rope import RotaryEmbedding
from omni_model.modules.transformer import Block, Stack

__all__ = ["Attention", "Block", "KVCache", "MoE", "RMSNorm", "RotaryEmbedding", "Stack", "SwiGLU"]
