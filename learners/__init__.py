"""Learners: the Learner interface and sleep-stage contract, `vector/` and `text/` methods, `shared/` parts.

Importing this package registers every vector learner and every stage that needs
no text machinery. The text learners and stages import transformers, TRL and PEFT
(seconds per process), so `somna.learners.text` is imported on the first lookup of
one of their names: digit runs and their Ray workers never pay for it.
"""

from somna.learners.base import Learner, LearnerConfig, Metrics, SleepConfig, SleepContext, derive_seed, seeded_generator
from somna.learners.stages import NoOptions, SleepStage
from somna.learners import hypernet, nested_opt, vector  # noqa: F401,E402  (register their learners and stages)
from somna.platform.registry import LEARNERS, SLEEP_STAGES  # noqa: E402

TEXT_PACKAGE = "somna.learners.text"
LEARNERS.defer(TEXT_PACKAGE, "base", "finetune", "finetune-no-dream", "replay", "in-context", "sleep", "opsd", "seal", "hnet")
SLEEP_STAGES.defer(TEXT_PACKAGE, "expansion", "knowledge-seeding", "dreaming")

__all__ = [
    "Learner",
    "LearnerConfig",
    "Metrics",
    "NoOptions",
    "SleepConfig",
    "SleepContext",
    "SleepStage",
    "derive_seed",
    "seeded_generator",
]
