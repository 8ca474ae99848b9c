"""Training plans: the stages of DESIGN.md section 3, in order, each from the previous one.

1. `text`: the Thinker learns language by next-token prediction on the text corpus (every
   token, text-only forward): no pretrained text model can be downloaded here.
2. `t2a`: text in, text and speech out, everything trained; the Talker starts from the
   Thinker's last blocks when their widths match.
3. `a2a_proj`: spoken questions, only the audio projector (and the offline audio encoder).
4. `a2a`: spoken questions, everything trained at a low learning rate.
5. `i2t`: images in, text out, only the vision projector (and the offline image encoder).

`reference` is the reference recipe at the reference scale; `tiny` runs every stage on the
tiny preset on CPU in minutes, mixing other tasks' rows into its stages, training
everything on I2T and leaving the Talker out of A2A and I2T (see `tiny_plan`). A variant
(Talker width, MoE) is the same plan with `plan.variant(talker_hidden=..., moe=...)`, which
also swaps the side encoders
(`audio_encoder="whisper"`, `image_encoder="siglip"`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from omni_model.config import OmniConfig, check_text_layout, make_config
from omni_model.encoders.audio import AUDIO_ENCODERS
from omni_model.encoders.image import IMAGE_ENCODERS
from omni_model.models import TRAINING_MODES
from omni_model.training.data import TASKS, DataSettings
from omni_model.training.model import EncoderSpec


@dataclass(frozen=True)
class Stage:
    """One training stage: which shards, which weights train, and the optimisation."""

    name: str
    task: str  # shard folder: text, t2a, a2a, i2t
    mode: str  # all, audio_proj, vision_proj
    lr: float
    batch_size: int
    max_seq_len: int
    epochs: float = 1.0
    max_steps: int | None = None  # when set, the stage length (epochs are ignored)
    grad_accum: int = 1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine from 1.0x down to this fraction of lr
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    text_only: bool = False  # no Talker forward (stages without speech targets)
    all_tokens: bool = False  # next-token loss on every text token, not only the reply
    mix: tuple[str, ...] = ()  # other tasks whose rows are mixed into every epoch
    mix_share: float = 0.5  # mixed-in rows per epoch, as a share of the stage's own
    augment: bool = True  # augment spoken questions (A2A rows)
    scheduled_sampling: float = 0.05
    drop_reference: float = 0.5
    init_talker_from_thinker: bool = False
    checkpoint_every: int = 1000
    eval_batches: int = 20  # validation batches at the end of the stage

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"stage {self.name}: unknown task {self.task!r} ({TASKS})")
        if self.mode not in TRAINING_MODES:
            raise ValueError(f"stage {self.name}: unknown mode {self.mode!r} ({TRAINING_MODES})")

    def data_settings(self, split: str = "train", seed: int = 0, **changes) -> DataSettings:
        """How this stage reads `split`; validation reads the stage's own task only, without
        augmentation or noise."""
        settings = DataSettings(
            task=self.task,
            max_seq_len=self.max_seq_len,
            batch_size=self.batch_size,
            split=split,
            mix=self.mix,
            mix_share=self.mix_share,
            augment=self.augment,
            all_tokens=self.all_tokens,
            drop_reference=self.drop_reference,
            scheduled_sampling=self.scheduled_sampling,
            seed=seed,
        )
        if split != "train":
            settings = dataclasses.replace(
                settings, mix=(), augment=False, drop_reference=0.0, scheduled_sampling=0.0
            )
        return dataclasses.replace(settings, **changes)


@dataclass(frozen=True)
class Plan:
    """A model preset (and variant), its side encoders, and its stages in order."""

    name: str
    preset: str
    stages: tuple[Stage, ...]
    encoders: EncoderSpec = field(default_factory=EncoderSpec)
    talker_hidden: int | None = None
    moe: bool = False
    text_layout: str = "sequential"  # where a spoken reply's text sits (TEXT_LAYOUTS)
    letter_window: int = 0  # letters of the reply the Talker reads (omni_model.text.letters)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ValueError(f"plan {self.name} has no stage {name!r}; stages: {self.stage_names}")

    @property
    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def previous(self, name: str) -> Stage | None:
        """The stage whose final checkpoint `name` starts from (None for the first)."""
        position = self.stage_names.index(self.stage(name).name)
        return self.stages[position - 1] if position else None

    def variant(
        self,
        *,
        talker_hidden: int | None = None,
        moe: bool = False,
        text_layout: str | None = None,
        letter_window: int | None = None,
        audio_encoder: str | None = None,
        whisper_model: str | None = None,
        image_encoder: str | None = None,
        siglip_model: str | None = None,
        patch_model: str | None = None,
    ) -> Plan:
        """The same stages for a model variant (the sweep's Talker width, dense or MoE), a
        text layout (aligned drops the letter window unless one is given), a letter window,
        and other side encoders (None keeps the plan's): `whisper` with a local
        `whisper_model` checkpoint for question audio, `siglip` with `siglip_model` for
        images, or the `patch` encoder pretrained into the `patch_model` file (frozen,
        instead of trained)."""
        choices = {
            "audio": audio_encoder,
            "whisper_model": whisper_model,
            "image": image_encoder,
            "siglip_model": siglip_model,
            "patch_model": patch_model,
        }
        encoders = dataclasses.replace(
            self.encoders, **{key: value for key, value in choices.items() if value is not None}
        )
        if text_layout is not None:
            check_text_layout(text_layout)
        if encoders.audio not in AUDIO_ENCODERS or encoders.image not in IMAGE_ENCODERS:
            raise ValueError(
                f"side encoders {encoders.audio!r}/{encoders.image!r}: audio is one of "
                f"{AUDIO_ENCODERS}, image one of {IMAGE_ENCODERS}"
            )
        plan = dataclasses.replace(
            self,
            talker_hidden=talker_hidden,
            moe=moe,
            encoders=encoders,
            text_layout=text_layout or self.text_layout,
            letter_window=self.letter_window if letter_window is None else letter_window,
        )
        if plan.text_layout == "aligned" and letter_window is None:
            plan = dataclasses.replace(plan, letter_window=0)  # the text sits where it is said
        return plan

    @property
    def variant_params(self) -> dict:
        """What sets this plan's model apart from its preset (logged with every run)."""
        return {
            "talker_hidden": self.talker_hidden,
            "moe": self.moe,
            "text_layout": self.text_layout,
            "letter_window": self.letter_window,
        }

    def model_config(self, vocab_size: int, speaker_dim: int | None) -> OmniConfig:
        """The preset with this plan's variant, the tokenizer's vocabulary and the shards'
        speaker-vector size; long enough for the longest stage."""
        config = make_config(
            self.preset,
            talker_hidden=self.talker_hidden,
            moe=self.moe,
            vocab_size=vocab_size,
            text_layout=self.text_layout,
            letter_window=self.letter_window,
        )
        longest = max(stage.max_seq_len for stage in self.stages)
        return dataclasses.replace(
            config,
            speaker_dim=speaker_dim or config.speaker_dim,
            max_seq_len=max(config.max_seq_len, longest),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def reference_plan() -> Plan:
    """The reference recipe (one RTX 3090-class GPU), preceded by the Thinker text stage."""
    return Plan(
        name="reference",
        preset="reference",
        stages=(
            Stage("text", "text", "all", 5e-4, 32, 512, text_only=True, all_tokens=True),
            Stage("t2a", "t2a", "all", 5e-4, 40, 512, init_talker_from_thinker=True),
            Stage("a2a_proj", "a2a", "audio_proj", 5e-4, 40, 640),
            Stage("a2a", "a2a", "all", 2e-5, 16, 768),
            Stage("i2t", "i2t", "vision_proj", 5e-4, 16, 512, text_only=True),
        ),
    )


def tiny_plan() -> Plan:
    """Every stage on the tiny preset: 30 minutes on a 2-core CPU (measured at 1bbf215).

    Changes from the reference recipe, each measured on the offline `small` corpus. A model
    this small forgets: after 200 I2T steps its T2A text exact match fell from 33% to 0%,
    so later stages mix in the earlier tasks' rows. It also generalises from few rows: the
    text stage reads T2A conversations too (text validation loss 0.52 instead of 0.71). And a
    frozen tiny Thinker cannot learn to read images through its projector alone (I2T
    validation loss stays at 4.6, against 1.2 with everything trained), so I2T trains
    everything, with the other tasks mixed in, but text only: pictures have no speech
    targets and a step without the Talker costs a third, so 1,500 such steps (I2T probes
    3/18, held-out rows 19%) cost less than 1,000 with it (1/18, 0%), and T2A text holds.
    The text stage's 1,500 steps over the `small` corpus' 2,000 text rows (instead of 600
    over 500) took T2A probes from 11/16 to 13/16.

    With the image encoder pretrained and frozen, I2T runs 9,000 steps over the `small`
    corpus' 23,000 pictures (from the demo's A2A checkpoint: I2T probes 12/18, held-out rows
    30/40, T2A probes 13/16; 4,500 steps over 3,000 pictures: 6/18, 25/40, 15/16). Each
    stage restarting at a high learning rate undid text the previous one had learned: T2A
    probes 14/16 after the text stage fell to 9/16 after 300 T2A steps at 2e-3, 13/16 at 5e-4.
    So I2T runs at 5e-4; its validation loss is 0.29 there against 0.36 at 1e-3. With the
    encoder also pretrained to count each colour, the same stage from the cff92dd demo's A2A
    checkpoint answered 39 of the 54 probes of now instead of 35 (counts of one colour 13/18
    instead of 8/18, shapes 14/18 instead of 16/18). The order of rows moves it as much:
    from the 6e80c3a demo's A2A checkpoint, data seeds 1 and 2 answer 33 of 54 each, against
    that demo's 39 with seed 0. An encoder 128 wide instead of 64 (pretraining names 0.96 of
    each picture's colour counts instead of 0.89) took data seeds 0, 1, 2 to 43, 43 and 34.

    The Talker learns slowly: after 300 T2A steps it predicted the first codebook no better
    than the codes' frequencies (7% right, teacher-forced, on held-out rows). After 3,000
    steps at 1e-3 it names 23% (at 2e-3 or with 4 Talker blocks: 24%), its replies sound like
    the asked voice, and text holds (T2A probes 16/16). On the phonetic codec's codes, 6,000
    steps name 55% of first codes (41% after 3,000) and took the probes' speech CER from 1.00
    to 0.82, but the text-only I2T stage after them undoes it; an I2T stage that trained the
    Talker on its mixed-in speech rows kept it (measured with a trainer that skipped the
    Talker on batches without speech targets, since reverted; README, Results). What made
    the speech follow the text was telling the Talker where in it each frame is: with a
    window of 7 letters around each frame's share of the reply, 3,000 T2A steps on the
    phonetic codes took the probes' speech CER from 1.00 to 0.50 (three sampling seeds).
    Counting codebook 0 four times in the audio loss (the tiny preset's
    `first_codebook_loss_weight`) took it from 0.58 and 0.65 to 0.48 and 0.60 for two data
    seeds (six sampling seeds each). The A2A stage leaves the Talker as T2A left it (text only):
    its sampled speech moves with 1-2% changes to its weights, and the A2A stage over every
    weight took the probes' speech from 0.49 to 0.67 (three pooled sampling seeds), while with
    the Talker frozen the model after I2T scores 0.47 (the stage over every weight: 0.64).
    """
    common = {"warmup_steps": 20, "checkpoint_every": 100, "eval_batches": 4}
    return Plan(
        name="tiny",
        preset="tiny",
        encoders=EncoderSpec(width=64),
        letter_window=7,
        stages=(
            Stage(
                "text", "text", "all", 3e-3, 16, 256, max_steps=1500, text_only=True,
                all_tokens=True, mix=("t2a",), **common,
            ),
            Stage(
                "t2a", "t2a", "all", 1e-3, 8, 384, max_steps=3000,
                init_talker_from_thinker=True, mix=("text",), **common,
            ),
            Stage("a2a_proj", "a2a", "audio_proj", 3e-3, 8, 384, max_steps=60, **common),
            Stage(
                "a2a", "a2a", "all", 1e-3, 8, 384, max_steps=150, text_only=True,
                mix=("t2a", "text"), **common,
            ),
            Stage(
                "i2t", "i2t", "all", 5e-4, 8, 384, max_steps=9000, text_only=True,
                mix=("t2a", "a2a", "text"), mix_share=1.0, **common,
            ),
        ),
    )  # fmt: skip


PLANS = {"reference": reference_plan, "tiny": tiny_plan}


def get_plan(name: str) -> Plan:
    if name not in PLANS:
        raise ValueError(f"unknown plan {name!r}; choose one of {sorted(PLANS)}")
    return PLANS[name]()
