"""Learners and sleep stages for text curricula (language models); imported on first lookup (see learners/__init__.py)."""

from somna.learners.text import base_lm, dreaming, finetune, hnet, in_context, opsd, replay, seal, seeding, sleep  # noqa: F401  (register)
