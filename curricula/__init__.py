"""Streams of experiences: class-, domain- and task-incremental digits, text streams, synthetic recall."""

from somna.curricula.base import SCENARIOS, Curriculum, CurriculumConfig, Experience, StreamInfo
from somna.curricula import digits  # noqa: F401  (registers split-digits, permuted-digits)

__all__ = ["SCENARIOS", "Curriculum", "CurriculumConfig", "Experience", "StreamInfo"]
