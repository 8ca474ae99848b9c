"""The training loop: one `Trainer` per stage, `train_stage` / `train_plan` to run plans.

AdamW, cosine LR from 1.0x to `min_lr_ratio` after a linear warmup, gradient clipping and
accumulation, bf16 autocast on GPU, optional `torch.compile`, DDP when launched by torchrun
(RANK / WORLD_SIZE / LOCAL_RANK in the environment) with this same entry point, CPU when
there is no GPU. Progress goes to a tqdm bar and to `Callback`s, so that the pipeline can
log to MLflow or Dagster without this library importing either.

A run writes `out/{stage}/step-NNNNNNN/` checkpoints (weights, optimizer, data position)
and `out/{stage}/final/`; the next stage starts from the previous stage's `final`. With
`resume`, finished stages are skipped and an interrupted one continues from its latest
checkpoint at the same step, the same data order and the same random draws.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import distributed as dist
from torch import nn
from tqdm import tqdm

from omni_model.config import OmniConfig
from omni_model.data.sample import IGNORE_INDEX
from omni_model.text.tokenizer import ChatTokenizer
from omni_model.training.checkpoint import (
    META_FILE,
    CheckpointError,
    build_model,
    latest_checkpoint,
    load_checkpoint,
    load_trainer_state,
    load_weights,
    read_meta,
    save_checkpoint,
    step_folder,
)
from omni_model.training.data import ShardData, ShardError, load_tokenizer, shard_speaker_dim
from omni_model.training.loss import LossBreakdown, audio_targets, omni_loss
from omni_model.training.model import TrainModel
from omni_model.training.plans import Plan, Stage
from omni_model.training.schedule import cosine_lr

FINAL = "final"
LOSS_WINDOW = 10  # steps averaged into a stage's first and final losses
LOSS_TARGETS = {"loss": None, "text_loss": "text_targets", "audio_loss": "audio_targets"}


@dataclass
class TrainSettings:
    """How to run (not what to learn): device, compilation, workers, logging."""

    device: str | None = None  # None: cuda if available, else cpu
    compile: bool = False
    seed: int = 0
    num_workers: int = 1  # data-loading processes (0: load in the training process)
    progress: bool = True
    keep_checkpoints: int = 2  # step checkpoints kept per stage (final is always kept)
    max_steps: int | None = None  # caps every stage (smoke runs, benchmarks)
    checkpoint_every: int | None = None  # overrides the stages' own
    codec_id: str | None = None  # codec of shards without a codec_id column (released files)


class Callback:
    """Hooks called on rank 0; override the ones you need."""

    def on_stage_start(self, plan: Plan, stage: Stage, info: dict) -> None:
        """info: data (files, rows, codec id, skipped), total_steps, start_step, device..."""

    def on_step(self, metrics: dict[str, float]) -> None:
        """After every optimizer step: step, epoch, loss, text_loss, audio_loss,
        audio_loss_cb0..7, aux_loss, lr, grad_norm, tokens_per_s, padding_fraction,
        text_targets, audio_targets (label positions; a loss is 0 where they are 0),
        data_s, step_s (all numbers)."""

    def on_checkpoint(self, path: Path) -> None:
        """After a checkpoint folder (step or final) is complete on disk."""

    def on_stage_end(self, result: StageResult) -> None:
        """When a stage has finished and its final checkpoint is written."""


@dataclass
class StageResult:
    plan: str
    stage: str
    checkpoint: str  # the final checkpoint folder
    steps: int
    seconds: float  # wall time of this run of the stage (0 when skipped as already done)
    tokens: int  # non-padding positions trained on in this run
    first_losses: dict[str, float]  # averaged over its first steps (see `window_losses`)
    final_losses: dict[str, float]  # averaged over its last steps
    validation: dict[str, float]  # on validation shards; empty without them
    data: dict  # ShardData.describe() of the training shards
    codec_id: str | None
    resumed_from: str | None = None
    skipped: bool = False  # already complete when a resumed plan reached it

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def distributed() -> Distributed:
    """Rank and world from torchrun's environment; joins the process group when > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(
        int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))
    )


def pick_device(requested: str | None, place: Distributed) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", place.local_rank)
    return torch.device("cpu")


def make_optimizer(model: nn.Module, stage: Stage) -> torch.optim.AdamW:
    """AdamW over trainable weights; no decay on norms, biases and scalars."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": stage.weight_decay},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=stage.lr, betas=(0.9, 0.95))


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def window_losses(window: list[dict[str, float]]) -> dict[str, float]:
    """Mean losses over steps; text and audio losses only over steps that had such targets
    (a step of mixed-in text rows has no audio loss to count)."""
    means = {}
    for key, targets in LOSS_TARGETS.items():
        values = [m[key] for m in window if targets is None or m[targets] > 0]
        means[key] = sum(values) / len(values) if values else 0.0
    return means


def loss_metrics(loss: LossBreakdown) -> dict[str, float]:
    metrics = {
        "loss": loss.total.item(),
        "text_loss": loss.text.item(),
        "audio_loss": loss.audio.item(),
        "aux_loss": loss.aux.item(),
    }
    metrics |= {f"audio_loss_cb{k}": v for k, v in enumerate(loss.per_codebook.tolist())}
    return metrics


class Trainer:
    """Trains one stage of a plan; `fit` runs it to the end (or until a callback raises)."""

    def __init__(
        self,
        plan: Plan,
        stage: Stage,
        model: TrainModel,
        data: ShardData,
        out_dir: str | Path,
        meta: dict,
        settings: TrainSettings | None = None,
        callbacks: Sequence[Callback] = (),
        validation: ShardData | None = None,
        place: Distributed | None = None,
    ):
        self.plan, self.stage, self.data, self.validation = plan, stage, data, validation
        self.settings, self.callbacks = settings or TrainSettings(), list(callbacks)
        settings = self.settings
        self.place = place or Distributed()
        self.stage_dir = Path(out_dir) / stage.name
        # Config, encoders, tokenizer and codec ids: copied into every checkpoint.
        self.meta = meta | {"codec_id": meta.get("codec_id") or data.codec_id}
        self.device = pick_device(settings.device, self.place)
        self.model = model.to(self.device)
        self.model.set_training_mode(stage.mode)
        self.optimizer = make_optimizer(self.model, stage)
        self.forward = self.wrap(self.model)
        self.total_steps = stage.max_steps or math.ceil(
            stage.epochs * data.batches_per_epoch() / stage.grad_accum
        )
        if settings.max_steps is not None:
            self.total_steps = min(self.total_steps, settings.max_steps)
        self.step, self.epoch, self.cursor = 0, 0, 0
        self.first: list[dict[str, float]] = []  # the stage's first LOSS_WINDOW steps
        self.recent: list[dict[str, float]] = []  # its latest LOSS_WINDOW steps
        self.tokens = 0

    def wrap(self, model: TrainModel) -> nn.Module:
        """DDP across ranks (parameters unused by a batch are allowed), then compile."""
        wrapped: nn.Module = model
        if self.place.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(
                wrapped, device_ids=ids, find_unused_parameters=True
            )
        self.ddp = wrapped if self.place.world_size > 1 else None
        return torch.compile(wrapped, dynamic=True) if self.settings.compile else wrapped

    def restore(self, path: Path) -> None:
        """Continue from a step checkpoint of this stage: weights, optimizer, step, data, RNG."""
        load_weights(self.model, path)
        state = load_trainer_state(path)
        if state is None:
            raise CheckpointError(str(path), "no trainer state: cannot resume from it")
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        meta = read_meta(path)
        self.step, self.epoch, self.cursor = (
            meta["step"],
            meta["data"]["epoch"],
            meta["data"]["batch"],
        )
        self.first = meta["first_steps"]

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches from the saved data position on; the position follows what was consumed."""
        loader = self.data.loader(self.epoch, self.cursor, self.settings.num_workers)
        for batch in loader:
            self.epoch, self.cursor = int(batch.pop("epoch")), int(batch.pop("batch")) + 1
            yield batch

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def losses(self, module: nn.Module, batch: dict[str, torch.Tensor]) -> LossBreakdown:
        """The loss of one batch; the Talker's logits are computed at its targets only."""
        positions, audio_labels = audio_targets(batch["audio_labels"])
        with self.autocast():
            output = module(batch, text_only=self.stage.text_only, audio_positions=positions)
            return omni_loss(
                output.text_logits,
                output.audio_logits,
                batch["text_labels"],
                audio_labels,
                output.aux_loss,
                stop_weight=self.model.config.stop_loss_weight,
                first_codebook_weight=self.model.config.first_codebook_loss_weight,
            )

    def train_step(self, stream: Iterator[dict[str, torch.Tensor]]) -> dict[str, float]:
        """One optimizer step over `grad_accum` micro-batches; returns its metrics."""
        started = time.perf_counter()
        stage = self.stage
        lr = cosine_lr(
            self.step, self.total_steps, stage.lr, stage.warmup_steps, stage.min_lr_ratio
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sums: dict[str, float] = {}
        positions = padded = text_targets = audio_targets = 0
        data_seconds = 0.0
        for micro in range(stage.grad_accum):
            fetch = time.perf_counter()
            batch = to_device(next(stream), self.device)
            data_seconds += time.perf_counter() - fetch
            sync = self.ddp is None or micro == stage.grad_accum - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                loss = self.losses(self.forward, batch)
                (loss.total / stage.grad_accum).backward()
            for key, value in loss_metrics(loss).items():
                sums[key] = sums.get(key, 0.0) + value / stage.grad_accum
            positions += int(batch["positions"])
            padded += batch["input_ids"].shape[0] * batch["input_ids"].shape[-1]
            text_targets += int(batch["text_labels"].ne(IGNORE_INDEX).sum())
            audio_targets += int(batch["audio_labels"].ne(IGNORE_INDEX).sum())
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = nn.utils.clip_grad_norm_(trainable, stage.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        self.step += 1
        self.tokens += positions * self.place.world_size
        return sums | {
            "step": self.step,
            "epoch": self.epoch,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens_per_s": positions * self.place.world_size / seconds,
            "padding_fraction": 1 - positions / padded,
            "text_targets": text_targets,
            "audio_targets": audio_targets,
            "data_s": data_seconds,
            "step_s": seconds,
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean losses over up to `eval_batches` validation batches (rank 0, unwrapped model)."""
        if self.validation is None or not self.stage.eval_batches:
            return {}
        self.model.eval()
        totals: dict[str, float] = {}
        count = 0
        for batch in self.validation.loader(epochs=1):
            loss = self.losses(self.model, to_device(batch, self.device))
            for key in ("loss", "text_loss", "audio_loss"):
                totals[key] = totals.get(key, 0.0) + loss_metrics(loss)[key]
            count += 1
            if count == self.stage.eval_batches:
                break
        self.model.train()
        return {f"val_{k}": v / count for k, v in totals.items()}

    def checkpoint_meta(self, **extra) -> dict:
        return self.meta | {
            "plan": self.plan.name,
            "plan_spec": self.plan.to_dict(),
            "stage": self.stage.name,
            "mode": self.stage.mode,
            "step": self.step,
            "total_steps": self.total_steps,
            "data": {"epoch": self.epoch, "batch": self.cursor, "seed": self.settings.seed},
            "first_steps": self.first,
            **extra,
        }

    def save_step(self) -> None:
        if self.place.main:
            state = {"optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
            if torch.cuda.is_available():
                state["cuda_rng"] = torch.cuda.get_rng_state_all()
            path = save_checkpoint(
                step_folder(self.stage_dir, self.step), self.model, self.checkpoint_meta(), state
            )
            old = sorted(self.stage_dir.glob("step-*"))[: -self.settings.keep_checkpoints]
            for folder in old:
                shutil.rmtree(folder)
            for callback in self.callbacks:
                callback.on_checkpoint(path)
        self.place.barrier()

    def fit(self, resume_from: Path | None = None) -> StageResult:
        if resume_from is not None:
            self.restore(resume_from)
        started = time.perf_counter()
        every = self.settings.checkpoint_every or self.stage.checkpoint_every
        if self.place.main:
            info = {
                "data": self.data.describe(),
                "total_steps": self.total_steps,
                "start_step": self.step,
                "device": str(self.device),
                "world_size": self.place.world_size,
                "trainable_parameters": sum(
                    p.numel() for p in self.model.parameters() if p.requires_grad
                ),
            }
            for callback in self.callbacks:
                callback.on_stage_start(self.plan, self.stage, info)
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=f"{self.plan.name}/{self.stage.name}",
            disable=not (self.settings.progress and self.place.main),
            dynamic_ncols=True,
        )
        self.model.train()
        stream = self.batches()
        while self.step < self.total_steps:
            metrics = self.train_step(stream)
            losses = {k: metrics[k] for k in (*LOSS_TARGETS, "text_targets", "audio_targets")}
            if len(self.first) < LOSS_WINDOW:
                self.first.append(losses)
            self.recent = [*self.recent, losses][-LOSS_WINDOW:]
            bar.update(1)
            bar.set_postfix(
                loss=f"{metrics['loss']:.3f}",
                text=f"{metrics['text_loss']:.3f}",
                audio=f"{metrics['audio_loss']:.3f}",
                lr=f"{metrics['lr']:.2e}",
                tok_s=f"{metrics['tokens_per_s']:.0f}",
            )
            if self.place.main:
                for callback in self.callbacks:
                    callback.on_step(metrics)
            if self.step % every == 0 and self.step < self.total_steps:
                self.save_step()
        bar.close()
        return self.finish(started, resume_from)

    def finish(self, started: float, resumed_from: Path | None) -> StageResult:
        """Validate, write the final checkpoint and report the stage's result."""
        result = StageResult(
            plan=self.plan.name,
            stage=self.stage.name,
            checkpoint=str(self.stage_dir / FINAL),
            steps=self.step,
            seconds=time.perf_counter() - started,
            tokens=self.tokens,
            first_losses=window_losses(self.first),
            final_losses=window_losses(self.recent),
            validation=self.evaluate() if self.place.main else {},
            data=self.data.describe(),
            codec_id=self.meta.get("codec_id"),
            resumed_from=None if resumed_from is None else str(resumed_from),
        )
        if self.place.main:
            meta = self.checkpoint_meta(complete=True, result=result.to_dict())
            path = save_checkpoint(self.stage_dir / FINAL, self.model, meta)
            for callback in self.callbacks:
                callback.on_checkpoint(path)
                callback.on_stage_end(result)
        self.place.barrier()
        return result


def initial_model(
    plan: Plan,
    stage: Stage,
    shards: Path,
    tokenizer: ChatTokenizer,
    source: Path | None,
    seed: int,
) -> tuple[TrainModel, dict]:
    """A stage's starting model and the facts checkpoints carry: fresh for a plan's first
    stage, else the previous stage's final checkpoint (`source`)."""
    if source is None:
        torch.manual_seed(seed)
        config = plan.model_config(tokenizer.vocab_size, shard_speaker_dim(shards))
        model, codec_id = TrainModel(config, plan.encoders), None
    else:
        model, meta = load_checkpoint(source)
        check_tokenizer(meta, tokenizer, source)
        codec_id = meta.get("codec_id")
        config = model.config
        if stage.init_talker_from_thinker and config.talker.hidden == config.thinker.hidden:
            model.model.init_talker_from_thinker()
    return model, {
        "config": model.config.to_dict(),
        "encoders": model.encoders.to_dict(),
        "tokenizer_id": tokenizer.tokenizer_id,
        "vocab_size": tokenizer.vocab_size,
        "codec_id": codec_id,
        "init_from": None if source is None else str(source),
    }


def layout_settings(config: OmniConfig) -> dict:
    """The data settings a model's sample layout fixes."""
    return {"text_layout": config.text_layout, "letter_window": config.letter_window}


def check_tokenizer(meta: dict, tokenizer: ChatTokenizer, path: Path) -> None:
    if meta.get("tokenizer_id") != tokenizer.tokenizer_id:
        raise CheckpointError(
            str(path),
            f"trained with tokenizer {meta.get('tokenizer_id')}, not {tokenizer.tokenizer_id}",
        )


def previous_final(plan: Plan, stage: Stage, out: Path) -> Path | None:
    """The previous stage's final checkpoint (None for a plan's first stage); must exist."""
    previous = plan.previous(stage.name)
    if previous is None:
        return None
    final = out / previous.name / FINAL
    if not (final / META_FILE).is_file():
        raise CheckpointError(
            str(final),
            f"stage {stage.name} starts from stage {previous.name}'s final checkpoint, "
            f"which is not there: train {previous.name} first",
        )
    return final


def model_codec(trained: str | None, given: str | None, shards: Path) -> str | None:
    """The codec the stage's codes must come from: the model's, else the one given."""
    if trained and given and trained != given:
        raise ShardError(
            str(shards), f"codec {given} was given, but the model was trained on codec {trained}"
        )
    return trained or given


def train_stage(
    plan: Plan,
    stage_name: str,
    *,
    shards: str | Path,
    tokenizer: str | Path | ChatTokenizer,
    out: str | Path,
    settings: TrainSettings | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    init: str | Path | None = None,
) -> StageResult:
    """Train one stage into `out/{stage}/final`.

    It starts from `init` if given, else from the previous stage's `out/{previous}/final`
    (fresh weights for the plan's first stage). With `resume`, a finished stage is reported
    from its final checkpoint without training, and an interrupted one continues from its
    latest step checkpoint; without it, the stage's old checkpoints are removed first.
    """
    settings = settings or TrainSettings()
    place = distributed()
    stage = plan.stage(stage_name)
    shards, stage_dir = Path(shards), Path(out) / stage.name
    if not isinstance(tokenizer, ChatTokenizer):
        tokenizer = load_tokenizer(tokenizer)
    final = stage_dir / FINAL
    if resume and final.is_dir():
        meta = read_meta(final)
        check_tokenizer(meta, tokenizer, final)
        return dataclasses.replace(StageResult(**meta["result"]), skipped=True)
    checkpoint = latest_checkpoint(stage_dir) if resume else None
    if checkpoint is None and place.main:
        shutil.rmtree(stage_dir, ignore_errors=True)
    place.barrier()
    if checkpoint is not None:
        meta = read_meta(checkpoint)
        check_tokenizer(meta, tokenizer, checkpoint)
        model = build_model(meta)
        keys = ("config", "encoders", "tokenizer_id", "vocab_size", "codec_id", "init_from")
        meta = {key: meta.get(key) for key in keys}
    else:
        source = Path(init) if init else previous_final(plan, stage, Path(out))
        model, meta = initial_model(plan, stage, shards, tokenizer, source, settings.seed)
    codec_id = model_codec(meta.get("codec_id"), settings.codec_id, shards)
    data = ShardData(
        shards,
        tokenizer,
        stage.data_settings("train", settings.seed, **layout_settings(model.config)),
        codec_id=codec_id,
        rank=place.rank,
        world_size=place.world_size,
    )
    if data.speaker_dim is not None and data.speaker_dim != model.config.speaker_dim:
        raise ShardError(
            str(shards),
            f"speaker vectors of {data.speaker_dim} values; the model takes "
            f"{model.config.speaker_dim}",
        )
    validation = None
    if place.main and stage.eval_batches:
        with contextlib.suppress(ShardError):  # no validation split: no validation losses
            validation = ShardData(
                shards, tokenizer,
                stage.data_settings("validation", settings.seed, **layout_settings(model.config)),
                codec_id=codec_id or data.codec_id,
            )  # fmt: skip
    trainer = Trainer(plan, stage, model, data, out, meta, settings, callbacks, validation, place)
    return trainer.fit(checkpoint)


def train_plan(
    plan: Plan,
    *,
    shards: str | Path,
    tokenizer: str | Path | ChatTokenizer,
    out: str | Path,
    settings: TrainSettings | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    stages: Sequence[str] | None = None,
) -> list[StageResult]:
    """Every stage (or the named ones) in plan order, each from the previous one's final."""
    if not isinstance(tokenizer, ChatTokenizer):
        tokenizer = load_tokenizer(tokenizer)
    names = plan.stage_names if stages is None else [plan.stage(n).name for n in stages]
    return [
        train_stage(
            plan,
            name,
            shards=shards,
            tokenizer=tokenizer,
            out=out,
            settings=settings,
            callbacks=callbacks,
            resume=resume,
        )
        for name in plan.stage_names
        if name in names
    ]
