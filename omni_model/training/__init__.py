"""Training: the loss (trainer and stages arrive with the training issue)."""

from omni_model.training.loss import LossBreakdown, omni_loss

__all__ = ["LossBreakdown", "omni_loss"]
