"""Accuracy matrices and continual-learning metrics, reports and plots."""

from somna.evals.metrics import acc, bwt, forgetting, fwt, summarize

__all__ = ["acc", "bwt", "forgetting", "fwt", "summarize"]
