"""Training: the loss (`loss`), data from shards (`data`), the model with its side encoders
(`model`), checkpoints, the stage plans (`plans`), the learning-rate schedule and the trainer."""

from omni_model.training.loss import LossBreakdown, omni_loss

__all__ = ["LossBreakdown", "omni_loss"]
