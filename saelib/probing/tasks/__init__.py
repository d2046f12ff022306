"""Binary probing tasks built offline from real text (see ``build`` and ``load``).

python -m saelib.probing.tasks build --out DIR
task = load_task("sentiment_movie", DIR)   # texts, labels [n], groups [n]
"""

from saelib.lm.sources import SourceUnavailable, cache_dir
from saelib.probing.tasks.builder import FAMILIES, build, default_dir, sample_task
from saelib.probing.tasks.load import ProbingTask, available_tasks, load_task

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
