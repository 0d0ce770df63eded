"""The sleep stages of "Language Models Need Sleep", as config switches over learner hooks.

A stage fixes *when* and *in what order* consolidation happens; the learner
supplies *how* for its modality (a language model distills with TRL, a digit
classifier with a plain KL loop). So `learner.sleep.stages=[expansion,
knowledge-seeding, dreaming]` means the same thing on every learner that
implements the hooks, and removing a name from the list is the ablation.

Hook contract (methods on the learner; each returns metrics to log):
  expand(context, **options)          unlock one pre-allocated low-rank expert,
                                      function-preserving (PAPERS.md: parameter expansion)
  seed_knowledge(context, **options)  distill teacher (before expansion) into the
                                      student (after), training only what expansion unlocked
  dream(context, **options)           generate rehearsal data and consolidate on it
"""

from __future__ import annotations

from typing import Any

from somna.learners.base import Learner, Metrics, SleepContext
from somna.platform.registry import register_sleep_stage


class HookStage:
    """Calls `learner.<hook>(context, **options)`; a learner without the hook is a clear error."""

    stage_name: str = ""
    hook: str = ""

    def __init__(self, **options: Any):
        self.options = options

    def __call__(self, learner: Learner, context: SleepContext) -> Metrics:
        method = getattr(learner, self.hook, None)
        if method is None:
            raise TypeError(
                f"sleep stage {type(self).stage_name!r} needs learner method {self.hook}(); "
                f"{type(learner).__name__} does not implement it"
            )
        return method(context, **self.options)


@register_sleep_stage("expansion")
class Expansion(HookStage):
    """Unlock one pre-allocated, masked low-rank expert in the receiving block (function-preserving)."""

    stage_name = "expansion"
    hook = "expand"


@register_sleep_stage("knowledge-seeding")
class KnowledgeSeeding(HookStage):
    """Generalized distillation of the teacher (pre-expansion self) into the expanded student."""

    stage_name = "knowledge-seeding"
    hook = "seed_knowledge"


@register_sleep_stage("dreaming")
class Dreaming(HookStage):
    """The model generates its own rehearsal curriculum and consolidates on it."""

    stage_name = "dreaming"
    hook = "dream"
