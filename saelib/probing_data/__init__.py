"""Binary probing tasks built offline from real text (see ``build`` and ``load``).

python -m saelib.probing_data build --out DIR
task = load_task("sentiment_movie", DIR)   # texts, labels [n], groups [n]
"""

from saelib.probing_data.builder import FAMILIES, build, default_dir, sample_task
from saelib.probing_data.load import ProbingTask, available_tasks, load_task
from saelib.sources import SourceUnavailable, cache_dir

__all__ = [
    "FAMILIES",
    "ProbingTask",
    "SourceUnavailable",
    "available_tasks",
    "build",
    "cache_dir",
    "default_dir",
    "load_task",
    "sample_task",
]
