"""The Thinker-Talker model and its parts."""

from omni_model.models.omni import TRAINING_MODES, OmniCache, OmniModel, OmniOutput
from omni_model.models.talker import Talker
from omni_model.models.thinker import Thinker

__all__ = ["TRAINING_MODES", "OmniCache", "OmniModel", "OmniOutput", "Talker", "Thinker"]
