"""Learners: the Learner interface, continual-learning baselines and the sleep learners."""

from somna.learners.base import Learner, LearnerConfig, Metrics, SleepConfig, SleepContext, SleepStage

__all__ = ["Learner", "LearnerConfig", "Metrics", "SleepConfig", "SleepContext", "SleepStage"]
from somna.learners import stages  # noqa: F401,E402  (registers expansion, knowledge-seeding, dreaming)
from somna.learners import der, ewc, finetune, joint, lwf, replay  # noqa: F401,E402  (registers the baselines)
from somna.learners import sleep_vision  # noqa: F401,E402  (registers the vision sleep learner)
from somna.platform.registry import LEARNERS  # noqa: E402

# The text learners import transformers, TRL and PEFT (seconds per process), so they are imported
# on first lookup: digit runs and their Ray workers never pay for them. lm_sleep imports the rest.
LEARNERS.defer(
    "somna.learners.lm_sleep", "finetune", "replay", "in-context", "opsd", "sleep", "seal", "finetune-no-dream"
)
from somna.learners import hypernet  # noqa: F401,E402  (registers the hypernet sleep stage and the hnet learner)
from somna.learners import nested_opt  # noqa: F401,E402  (registers the nested-opt sleep stage)
from somna.learners import hope  # noqa: F401,E402  (registers the hope learner)
LEARNERS.defer("somna.learners.hypernet_lm", "hnet")  # hnet for text streams (PEFT LoRA from the hypernetwork)
