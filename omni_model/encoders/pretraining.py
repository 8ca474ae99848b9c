"""Pretraining the offline patch image encoder: say what is in every cell of a picture.

SigLIP cannot be downloaded here. Trained only through a tiny Thinker's next-token loss,
the patch encoder learns colours but hardly shapes, so the model cannot answer "What shape
is the pink one?" about a pair it never saw. Pretrained first with a small head that names
the attributes (colour, shape) of the object in each grid cell, the encoder tells colours
and shapes apart, also for pairs it never saw drawn together; the Thinker then reads it
frozen, as it would read SigLIP.

Labels are one class per cell and attribute, 0 meaning an empty cell, so the encoder learns
which cells are empty as well as what the others hold; `IGNORE` marks a label nothing counts.

A patch embedding reads colour and shape entangled: pretrained on the corpus' pictures alone,
the encoder named the shape of a green diamond or a yellow hexagon (pairs it never saw) 16-21%
of the time, as a shape it had seen in that colour. So part of every batch is recoloured (its
colour channels shuffled, `PretrainSettings.recolour`) and teaches only shape and emptiness:
shapes come in many more colours than are named, and are read the same in any of them.

The head also says how many shapes of each colour the picture holds, from the mean over all
its tokens. The Thinker reading cells could not count one colour: the patches a shape covers
vary with its size and cell (cells hold 4 to 9 patches), and given every cell's colour and
shape names as words it still counted 0 of 6 held-out probes. With the counts in the tokens'
mean, a question's colour only has to pick one of them. Named from every token instead, the
counts cost the encoder held-out shapes and the Thinker counted worse (README, Results).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omni_model.encoders.image import IMAGE_TOKENS, ImageEncoder, normalise
from omni_model.training.schedule import cosine_lr

EMPTY = 0  # the label of a cell with nothing in it
IGNORE = -100  # a label no loss or accuracy counts (cross-entropy's default ignore_index)
COLOUR = "colour"  # the attribute that recolouring makes unknown
COUNTS = "colour_counts"  # the picture-level output: how many shapes of each colour
# The five orders of the RGB channels that change a picture's colours.
CHANNEL_SHUFFLES = torch.tensor([[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


@dataclass(frozen=True)
class CellData:
    """Pictures and what each grid cell holds.

    pixels: (N, 3, 256, 256) uint8 (`omni_model.encoders.image.resize`).
    labels: attribute -> (N, cells) class ids, `EMPTY` for an empty cell, `IGNORE` for one
        that is not counted.
    classes: attribute -> number of classes, `EMPTY` included.
    """

    pixels: torch.Tensor
    labels: dict[str, torch.Tensor]
    classes: dict[str, int]

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("cell data needs labels for at least one attribute")
        count = len(self.pixels)
        for name, labels in self.labels.items():
            if labels.shape[0] != count or labels.shape[1] != self.cells:
                expected = (count, self.cells)
                raise ValueError(f"labels {name!r}: shape {tuple(labels.shape)}, not {expected}")
            counted = labels[labels != IGNORE]
            if len(counted) and (
                int(counted.max()) >= self.classes[name] or int(counted.min()) < 0
            ):
                raise ValueError(
                    f"labels {name!r}: ids outside 0..{self.classes[name] - 1} (or {IGNORE})"
                )

    @property
    def cells(self) -> int:
        return next(iter(self.labels.values())).shape[1]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.pixels[index], {name: labels[index] for name, labels in self.labels.items()}


class CellHead(nn.Module):
    """Averages the patch tokens whose centres fall in each grid cell, then one linear
    classifier per attribute. Small and fixed on purpose: what a cell holds must be in the
    tokens over it, which is how the Thinker will read them. With a colour attribute, a
    small MLP on the mean of all tokens also names each colour's count (0..cells): the mean
    is what an even attention over the picture hands the Thinker."""

    def __init__(self, feature_dim: int, cells: int, classes: dict[str, int]):
        super().__init__()
        self.register_buffer("pooling", cell_pooling(cells, IMAGE_TOKENS), persistent=False)
        self.classifiers = nn.ModuleDict(
            {name: nn.Linear(feature_dim, count) for name, count in classes.items()}
        )
        colours = classes.get(COLOUR, 1) - 1
        self.colour_counts = (
            nn.Sequential(
                nn.Linear(feature_dim, 4 * feature_dim),
                nn.GELU(),
                nn.Linear(4 * feature_dim, colours * (cells + 1)),
            )
            if colours
            else None
        )

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens (B, T, D) -> attribute -> logits (B, cells, classes), and `COUNTS` ->
        logits (B, colours, cells + 1)."""
        pooled = self.pooling @ tokens  # (B, cells, D)
        logits = {name: classify(pooled) for name, classify in self.classifiers.items()}
        if self.colour_counts is not None:
            counts = self.colour_counts(tokens.mean(dim=1))  # (B, colours * (cells + 1))
            cells = self.pooling.shape[0]
            logits[COUNTS] = counts.view(len(tokens), -1, cells + 1)
        return logits


def cell_pooling(cells: int, tokens: int) -> torch.Tensor:
    """(cells, tokens) weights: each row averages the patches whose centre lies in that cell
    (both square grids in reading order, e.g. 3 x 3 cells over 8 x 8 patches)."""
    grid, patches = math.isqrt(cells), math.isqrt(tokens)
    if grid * grid != cells or patches * patches != tokens or grid > patches:
        raise ValueError(f"{cells} cells over {tokens} patch tokens: both must be square grids")
    centre_cell = ((torch.arange(patches) + 0.5) * grid / patches).long()  # per patch row/col
    cell_of = (centre_cell[:, None] * grid + centre_cell[None, :]).flatten()  # (tokens,)
    weights = (cell_of[None, :] == torch.arange(cells)[:, None]).float()
    return weights / weights.sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class PretrainSettings:
    """AdamW with warm-up and cosine decay; `seed` fixes the head's weights and the batches."""

    steps: int = 4000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    recolour: float = 0.5  # share of each batch with its colour channels shuffled
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.recolour <= 1.0:
            raise ValueError(f"recolour is a share of each batch, 0..1, not {self.recolour}")


def cell_loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed over attributes: mean cross-entropy over every counted cell, empty ones included
    (0 for an attribute with none counted); with `COUNTS` logits, plus their mean over the
    counted (picture, colour) pairs."""
    total = torch.zeros(())
    targets = dict(labels)
    if COUNTS in logits:
        targets[COUNTS] = colour_counts(labels[COLOUR], logits[COUNTS].shape[1])
    for name, scores in logits.items():
        truth = targets[name].flatten()
        summed = F.cross_entropy(scores.flatten(0, 1), truth, ignore_index=IGNORE, reduction="sum")
        total = total + summed / (truth != IGNORE).sum().clamp(min=1)
    return total


def colour_counts(colour: torch.Tensor, colours: int) -> torch.Tensor:
    """Cell colour labels (B, cells) -> shapes per colour (B, colours), `IGNORE` for every
    colour of a picture with any cell not counted (recoloured, or labelled only in part)."""
    counts = (colour[:, :, None] == torch.arange(1, colours + 1)).sum(dim=1)  # (B, colours)
    uncounted = (colour == IGNORE).any(dim=1, keepdim=True)  # (B, 1)
    return torch.where(uncounted, IGNORE, counts)


def recoloured(
    pixels: torch.Tensor,
    labels: dict[str, torch.Tensor],
    share: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Shuffle the colour channels of about `share` of the pictures (B, 3, H, W), each in
    one of the five orders that change colours; their occupied cells' `COLOUR` labels become
    `IGNORE` (the colour has no name now), every other label stays."""
    chosen = torch.rand(len(pixels), generator=generator) < share  # (B,)
    if not chosen.any():
        return pixels, labels
    orders = CHANNEL_SHUFFLES[
        torch.randint(0, len(CHANNEL_SHUFFLES), (len(pixels),), generator=generator)
    ]
    orders = torch.where(chosen[:, None], orders, torch.arange(3))  # (B, 3); the rest keep RGB
    pixels = pixels[torch.arange(len(pixels))[:, None], orders]  # whole channel planes: fast
    if COLOUR in labels:
        colour = labels[COLOUR]
        unnamed = chosen[:, None] & (colour != EMPTY)  # (B, cells)
        labels = {**labels, COLOUR: torch.where(unnamed, IGNORE, colour)}
    return pixels, labels


def pretrain_image_encoder(
    encoder: ImageEncoder,
    data: CellData,
    settings: PretrainSettings = PretrainSettings(),
    on_step: Callable[[int, float], None] | None = None,
) -> CellHead:
    """Train `encoder` (in place) and a new `CellHead` to name every cell's attributes;
    `on_step(step, loss)` after each step. Returns the head, for `cell_accuracy`."""
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    head = CellHead(encoder.feature_dim, data.cells, data.classes)
    parameters = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=0.01)
    encoder.train()
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(
                step, settings.steps, settings.lr, settings.warmup_steps, settings.min_lr_ratio
            )
        index = torch.randint(0, len(data.pixels), (settings.batch_size,), generator=generator)
        pixels, labels = recoloured(*data.batch(index), settings.recolour, generator)
        loss = cell_loss(head(encoder(normalise(pixels))), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if on_step is not None:
            on_step(step, loss.item())
    return head.eval()


@torch.no_grad()
def cell_accuracy(
    encoder: ImageEncoder, head: CellHead, data: CellData, batch_size: int = 64
) -> dict[str, float]:
    """Per attribute: the share of occupied, counted cells whose class the head names right."""
    right = {name: 0 for name in data.labels}
    occupied = {name: 0 for name in data.labels}
    for logits, labels in head_outputs(encoder, head, data, batch_size):
        for name, truth in labels.items():
            mask = (truth != EMPTY) & (truth != IGNORE)
            right[name] += int((logits[name].argmax(-1) == truth)[mask].sum())
            occupied[name] += int(mask.sum())
    return {name: right[name] / max(1, occupied[name]) for name in data.labels}


@torch.no_grad()
def count_accuracy(
    encoder: ImageEncoder, head: CellHead, data: CellData, batch_size: int = 64
) -> float:
    """The share of (picture, colour) counts the head names right, 0 counts included, over
    the pictures with every cell's colour labelled."""
    right = counted = 0
    for logits, labels in head_outputs(encoder, head, data, batch_size):
        counts = logits[COUNTS]  # (B, colours, cells + 1)
        truth = colour_counts(labels[COLOUR], counts.shape[1])
        mask = truth != IGNORE
        right += int((counts.argmax(-1) == truth)[mask].sum())
        counted += int(mask.sum())
    return right / max(1, counted)


def head_outputs(
    encoder: ImageEncoder, head: CellHead, data: CellData, batch_size: int
) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """The head's logits and the labels, batch by batch, with the encoder in eval mode."""
    encoder.eval()
    for start in range(0, len(data.pixels), batch_size):
        pixels, labels = data.batch(torch.arange(start, min(start + batch_size, len(data.pixels))))
        yield head(encoder(normalise(pixels))), labels
