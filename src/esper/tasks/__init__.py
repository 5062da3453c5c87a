"""Tasks: a host, its data, its slot layout (the host's slots) and training defaults.

Every task works offline. `default_tasks().get(name)` returns a `Task`;
`task.load_data(TaskOptions(...))` gives `DataSplits`; `task.build_host(splits)`
builds the host sized for that data.
"""

from esper.tasks.base import DATA_KINDS, DataSplits, Task, TaskDefaults, TaskOptions
from esper.tasks.cache import CACHE_ENV_VAR, default_cache_dir
from esper.tasks.registry import DEFAULT_TASK, TaskRegistry, default_tasks

__all__ = [
    "CACHE_ENV_VAR",
    "DATA_KINDS",
    "DEFAULT_TASK",
    "DataSplits",
    "Task",
    "TaskDefaults",
    "TaskOptions",
    "TaskRegistry",
    "default_cache_dir",
    "default_tasks",
]
