"""Learners for vector curricula (digits): one registered method per module."""

from somna.learners.vector import der, ewc, finetune, hnet, hope, joint, lwf, replay, sleep  # noqa: F401  (register)
