"""omni_model: a ~0.1B Thinker-Talker omni model in plain PyTorch.

Subpackages: `modules` (transformer parts), `models` (Thinker, Talker, OmniModel),
`data` (the 9-stream sample layout), `text` (tokenizer and chat format), `training`
(loss), `generation` (streaming decoding). No Dagster or MLflow in here.
"""

from omni_model.config import OmniConfig, make_config
from omni_model.models import OmniModel

__all__ = ["OmniConfig", "OmniModel", "make_config"]
