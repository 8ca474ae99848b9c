"""Model configuration: one dataclass with the reference defaults and named presets.

The numbers follow DESIGN.md section 2 (the reference "minimind-3o" scale). Presets are
plain functions so a newcomer can read exactly what differs between them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from omni_model.quantization.base import CODEBOOK_SIZE as CODEBOOK_SIZE
from omni_model.quantization.base import NUM_CODEBOOKS as NUM_CODEBOOKS

# Audio vocabulary (DESIGN.md section 2): 0..2047 codec codes, then specials.
AUDIO_VOCAB_SIZE = 2112
AUDIO_PAD_ID = 2049
AUDIO_STOP_ID = 2050
SPEAKER_MARKER_ID = 2051
# Where a spoken reply's text tokens sit in the text row (omni_model.data.sample).
TEXT_LAYOUTS = ("sequential", "aligned")


def check_text_layout(layout: str) -> None:
    if layout not in TEXT_LAYOUTS:
        raise ValueError(f"unknown text layout {layout!r}; choose one of {TEXT_LAYOUTS}")


def swiglu_hidden(hidden: int) -> int:
    """SwiGLU intermediate size ceil(hidden * pi / 64) * 64 (2,432 at 768)."""
    return math.ceil(hidden * math.pi / 64) * 64


@dataclass
class StackConfig:
    """Shape of one transformer stack (the Thinker or the Talker)."""

    hidden: int = 768
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 4
    rope_theta: float = 1e6
    norm_eps: float = 1e-6
    # YaRN context extension: factor > 1 stretches RoPE beyond original_max_positions.
    yarn_factor: float = 1.0
    yarn_original_max_positions: int = 2048
    use_moe: bool = False
    num_experts: int = 4
    experts_per_token: int = 1

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return swiglu_hidden(self.hidden)


@dataclass
class OmniConfig:
    """Everything needed to build an OmniModel; serialisable with `to_dict`."""

    vocab_size: int = 6400
    thinker: StackConfig = field(default_factory=StackConfig)
    talker: StackConfig = field(default_factory=lambda: StackConfig(num_layers=4))
    audio_vocab_size: int = AUDIO_VOCAB_SIZE
    num_codebooks: int = NUM_CODEBOOKS
    adapter_rank: int = 256
    speaker_dim: int = 192
    audio_feature_dim: int = 512
    image_feature_dim: int = 768
    image_tokens: int = 64
    max_seq_len: int = 1024
    moe_aux_coef: float = 5e-4
    stop_loss_weight: float = 10.0
    first_codebook_loss_weight: float = 1.0  # codebook 0 counts this many times in the mean
    text_scale_init: float = 3.0
    audio_scale_init: float = 1.0
    text_layout: str = "sequential"  # one of TEXT_LAYOUTS
    # > 0: the Talker also reads this many letters of the reply around the one each frame
    # says (omni_model.text.letters); sequential layout only. 0 is DESIGN.md's Talker.
    letter_window: int = 0

    def __post_init__(self) -> None:
        check_text_layout(self.text_layout)
        if self.letter_window < 0 or (self.letter_window and self.text_layout != "sequential"):
            raise ValueError(
                f"letter_window {self.letter_window}: must be >= 0, and 0 unless the text "
                "layout is sequential (aligned text already sits where it is spoken)"
            )
        for name in ("thinker", "talker"):
            stack = getattr(self, name)
            if isinstance(stack, dict):
                setattr(self, name, StackConfig(**stack))
        for name, stack in (("thinker", self.thinker), ("talker", self.talker)):
            if stack.hidden % stack.num_heads or stack.num_heads % stack.num_kv_heads:
                raise ValueError(
                    f"{name}: hidden {stack.hidden} must split into {stack.num_heads} heads "
                    f"and heads into {stack.num_kv_heads} KV groups"
                )
            if stack.head_dim % 2:
                raise ValueError(f"{name}: head dim {stack.head_dim} must be even for RoPE")

    @property
    def bridge_layer(self) -> int:
        """Thinker layer whose output feeds the Talker (3 of 8)."""
        return self.thinker.num_layers // 2 - 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> OmniConfig:
        return cls(**data)


def reference_config() -> OmniConfig:
    """The ~0.1B reference scale: Thinker 768 x 8, Talker 4 blocks at 768."""
    return OmniConfig()


def tiny_config() -> OmniConfig:
    """A few million parameters: for CPU tests and the offline demo. Codebook 0 (what is
    said) counts 4x in the audio loss: over two training seeds of the tiny plan's T2A stage
    it took the probes' speech CER from 0.58 and 0.65 to 0.48 and 0.60 (x8: 0.77)."""
    return OmniConfig(
        thinker=StackConfig(hidden=128, num_layers=4, num_heads=4, num_kv_heads=2),
        talker=StackConfig(hidden=128, num_layers=2, num_heads=4, num_kv_heads=2),
        adapter_rank=32,
        speaker_dim=64,
        audio_feature_dim=64,
        image_feature_dim=64,
        max_seq_len=512,
        first_codebook_loss_weight=4.0,
    )


PRESETS = {"reference": reference_config, "tiny": tiny_config}


def make_config(
    preset: str = "reference",
    *,
    talker_hidden: int | None = None,
    moe: bool = False,
    vocab_size: int | None = None,
    text_layout: str | None = None,
    letter_window: int | None = None,
) -> OmniConfig:
    """Build a preset, optionally changing the Talker width, MoE, vocabulary size, the
    layout of spoken replies' text and the Talker's letter window."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    config = PRESETS[preset]()
    if talker_hidden is not None:
        config.talker = dataclasses.replace(config.talker, hidden=talker_hidden)
    if moe:  # the Talker blocks are "of the same kind", so both stacks switch
        config.thinker = dataclasses.replace(config.thinker, use_moe=True)
        config.talker = dataclasses.replace(config.talker, use_moe=True)
    if vocab_size is not None:
        config.vocab_size = vocab_size
    if text_layout is not None:
        config.text_layout = text_layout
    if letter_window is not None:
        config.letter_window = letter_window
    config.__post_init__()
    return config
