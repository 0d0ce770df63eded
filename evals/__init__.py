"""Accuracy matrices and continual-learning metrics, reports and plots."""

from somna.evals.metrics import (
    acc,
    average_incremental_accuracy,
    bwt,
    forgetting,
    forgetting_first,
    fwt,
    intransigence,
    per_experience,
    plasticity,
    summarize,
)

__all__ = [
    "acc",
    "average_incremental_accuracy",
    "bwt",
    "forgetting",
    "forgetting_first",
    "fwt",
    "intransigence",
    "per_experience",
    "plasticity",
    "summarize",
]
# Reports, plots, comparisons and trackers pull in matplotlib/scipy; import them
# as somna.evals.report, .plots, .compare, .stats, .rundir, .tracking.
