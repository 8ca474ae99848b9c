"""Training assets: the plan's stages, each trained out of process from the shards.

`thinker_text` -> `omni_t2a` -> `omni_a2a` (projector, then everything) -> `omni_i2t`: each
asset trains its stages from the previous asset's final checkpoint, in a process started
through dagster-pipes (`pipelines.launch_training`), which logs to MLflow and streams its
progress into the Dagster run. The plan and model variant are the `trainer` resource's config,
so one launchpad setting covers every stage of a run. The first stage builds the model, so it
also picks the image encoder: the pretrained `patch_image_encoder`, frozen, by default; later
stages carry it on in their checkpoints.
"""

import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import dagster as dg

from omni_model.training.model import FROZEN_ENCODERS
from omni_model.training.plans import get_plan
from pipelines.assets.shards import ShardSet
from pipelines.assets.text import TokenizerFile
from pipelines.launch_training import TrainingRequest
from pipelines.resources import StoreResource

LAUNCH_COMMAND = [sys.executable, "-m", "pipelines.launch_training"]
FROZEN = set(FROZEN_ENCODERS.values())  # whisper, siglip: named in the variant folder


def launch(
    client: dg.PipesSubprocessClient,
    context: dg.AssetExecutionContext,
    request: TrainingRequest,
    report_materialization: bool = True,
) -> dg.PipesClientCompletedInvocation:
    """Train `request` in a pipes subprocess; its logs stream into the run. Without
    `report_materialization` the process reports its summary as a custom message instead."""
    extras = {
        "request": dataclasses.asdict(request),
        "report_materialization": report_materialization,
    }
    with warnings.catch_warnings():
        # Dagster's pipes plumbing warns about its own preview/deprecated internals on every
        # launch: nothing a user of these assets can act on.
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="dagster")
        return client.run(context=context, command=LAUNCH_COMMAND, extras=extras)


class TrainerResource(dg.ConfigurableResource):
    """Which plan and model variant to train, and how (device, step cap, resume)."""

    plan: str = "tiny"
    talker_hidden: int | None = None  # Talker width variant (384, 512, 768); None: the preset's
    moe: bool = False  # MoE MLPs instead of dense ones
    # A spoken reply's text row: "sequential" or "aligned" with its speech; None: the plan's.
    text_layout: str | None = None
    # Letters of the reply the Talker reads around the one each frame says; None: the plan's.
    letter_window: int | None = None
    audio_encoder: str | None = None  # "whisper" (frozen, whisper_model) or "logmel"; None: plan's
    whisper_model: str | None = None  # a local Whisper checkpoint file, or a cached name
    image_encoder: str | None = None  # "siglip" (frozen, siglip_model) or "patch"; None: plan's
    siglip_model: str | None = None  # a local SigLIP2 folder, or a cached hub name
    # The patch image encoder: pretrained by the `patch_image_encoder` asset and frozen;
    # False trains it from scratch with the model.
    pretrained_image_encoder: bool = True
    max_steps: int | None = None  # caps every stage (smoke runs)
    device: str | None = None  # None: cuda when available, else cpu
    resume: bool = False  # continue an interrupted stage from its latest step checkpoint

    def variant_name(self, talker_hidden: int | None = None, moe: bool | None = None) -> str:
        """Folder and run name of a plan variant: `tiny`, `tiny-talker512`, `tiny-talker512-moe`,
        `tiny-aligned` (text layout chosen), `tiny-letters7` (letter window chosen),
        `tiny-whisper-siglip` (frozen side encoders)."""
        hidden = self.talker_hidden if talker_hidden is None else talker_hidden
        moe = self.moe if moe is None else moe
        parts = [self.plan, f"talker{hidden}" if hidden else "", "moe" if moe else ""]
        parts += [self.text_layout or ""]
        parts += [f"letters{self.letter_window}" if self.letter_window is not None else ""]
        parts += [name for name in (self.audio_encoder, self.image_encoder) if name in FROZEN]
        return "-".join(part for part in parts if part)

    def variant(self, **changes: Any) -> dict[str, Any]:
        """This resource's model variant as keyword arguments of `Plan.variant`, with
        `changes` (a sweep's Talker width, the pretrained patch encoder file)."""
        chosen = {
            "talker_hidden": self.talker_hidden,
            "moe": self.moe,
            "text_layout": self.text_layout,
            "letter_window": self.letter_window,
            "audio_encoder": self.audio_encoder,
            "whisper_model": self.whisper_model,
            "image_encoder": self.image_encoder,
            "siglip_model": self.siglip_model,
        }
        return chosen | changes

    def request(
        self,
        store: StoreResource,
        launch_id: str,
        stages: list[str],
        tokenizer: TokenizerFile,
        shard_sets: list[ShardSet],
        patch_model: str | None = None,
    ) -> TrainingRequest:
        """The launch description for `stages` of this resource's plan variant (with the
        pretrained patch image encoder file `patch_model`, if one is given)."""
        plan = get_plan(self.plan)
        return TrainingRequest(
            store_root=str(store.path()),
            shards=str(store.path("shards")),
            tokenizer=tokenizer.path,
            out=str(store.path("training", self.variant_name())),
            launch_id=launch_id,
            stages=stages,
            plan=self.plan,
            variant=self.variant(patch_model=patch_model),
            max_steps=self.max_steps,
            device=self.device,
            resume=self.resume,
            register=stages[-1] == plan.stage_names[-1],
            inputs=[shard_input(shard_set) for shard_set in shard_sets if shard_set.rows],
            tags={"dagster_run_id": launch_id, "tokenizer_id": tokenizer.tokenizer_id},
        )

    def uses_pretrained_patch_encoder(self) -> bool:
        """Whether this plan variant reads images through the pretrained patch encoder."""
        image = self.image_encoder or get_plan(self.plan).encoders.image
        return self.pretrained_image_encoder and image == "patch"

    def pretrained_patch_encoder(self, instance: dg.DagsterInstance) -> str | None:
        """The newest `patch_image_encoder` file, when this plan variant reads images through
        it (None otherwise)."""
        if not self.uses_pretrained_patch_encoder():
            return None
        event = instance.get_latest_materialization_event(dg.AssetKey("patch_image_encoder"))
        if event is None or event.asset_materialization is None:
            raise dg.Failure(
                "no pretrained image encoder yet: materialize `patch_image_encoder` (the "
                "vision group) first, or set the trainer's pretrained_image_encoder to false"
            )
        return str(event.asset_materialization.metadata["encoder_file"].value)


def shard_input(shard_set: ShardSet) -> dict:
    """What MLflow records of a shard set a stage read (see `tracking.log_shard_inputs`).

    The reference import is one set over every task's folder (task `reference`).
    """
    return {
        "task": shard_set.task,
        "folder": os.path.commonpath([str(Path(path).parent) for path in shard_set.paths]),
        "content_hash": shard_set.content_hash,
        "rows": shard_set.rows,
        "codec_id": shard_set.codec_id,
    }


def training_asset(name: str, stages: list[str], task: str, after: str | None, description: str):
    """An asset training `stages` on `task`'s shards, after the `after` asset's checkpoint
    (the first, without `after`, builds the model around the pretrained image encoder)."""
    shard_assets = [f"{task}_shards", "reference_shards"]
    ins = {name: dg.AssetIn() for name in ["chat_tokenizer", *shard_assets]}

    @dg.asset(
        name=name,
        group_name="training",
        ins=ins,
        deps=[after] if after else ["patch_image_encoder"],
        kinds={"pytorch", "mlflow"},
        description=description,
    )
    def train(
        context: dg.AssetExecutionContext,
        store: StoreResource,
        trainer: TrainerResource,
        pipes_subprocess_client: dg.PipesSubprocessClient,
        chat_tokenizer: TokenizerFile,
        **shards: ShardSet,
    ) -> dg.MaterializeResult:
        patch_model = None if after else trainer.pretrained_patch_encoder(context.instance)
        request = trainer.request(
            store, context.run.run_id, stages, chat_tokenizer, [*shards.values()], patch_model
        )
        invocation = launch(pipes_subprocess_client, context, request)
        return invocation.get_materialize_result()

    return train


thinker_text = training_asset(
    "thinker_text", ["text"], "text", None, "The Thinker learns language: next-token on text."
)
omni_t2a = training_asset(
    "omni_t2a", ["t2a"], "t2a", "thinker_text", "Text in, text and 8-codebook speech out."
)
omni_a2a = training_asset(
    "omni_a2a",
    ["a2a_proj", "a2a"],
    "a2a",
    "omni_t2a",
    "Spoken questions: the audio projector alone, then everything at a low learning rate.",
)
omni_i2t = training_asset(
    "omni_i2t", ["i2t"], "i2t", "omni_a2a", "Images in, text out (the image encoder frozen)."
)
