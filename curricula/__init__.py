"""Streams of experiences: class-, domain- and task-incremental digits, text streams, synthetic recall."""

from somna.curricula.base import SCENARIOS, Curriculum, CurriculumConfig, Experience, StreamInfo, vector_dataset
from somna.curricula import digits  # noqa: F401  (registers split-digits, permuted-digits)
from somna.curricula import text  # noqa: F401  (registers fact-stream, new-language, intents)

__all__ = ["SCENARIOS", "Curriculum", "CurriculumConfig", "Experience", "StreamInfo", "vector_dataset"]
