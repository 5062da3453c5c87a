"""Tasks by name.

`default_tasks()` returns the process's registry, built on first use with the
built-in tasks `mnist1d` (the default), `mnist1d-blind`, `cifar10` and
`text`. Building the registry does not load any data.

Add your own task (no need to edit Esper)::

    from esper.tasks import Task, TaskDefaults, default_tasks

    default_tasks().register(
        Task(
            name="my-task",
            description="...",
            topology="cnn",
            host_kind="cnn",
            host_config={...},            # arguments of esper.hosts.build_host("cnn", ...)
            defaults=TaskDefaults(epochs=20, batch_size=64, host_lr=0.01, seed_lr=0.01,
                                  max_seeds=2, seed_budget_ratio=1.0),
            data_loader=my_loader,        # TaskOptions -> DataSplits
            default_blueprints=("conv_light", "norm"),
        )
    )

Registering a name twice raises; asking for an unknown name raises a
ValueError listing the available tasks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from esper.tasks.base import Task

DEFAULT_TASK = "mnist1d"


class TaskRegistry:
    """Name -> Task, in registration order."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()

    def register(self, task: Task) -> Task:
        if not isinstance(task, Task):
            raise ValueError(f"TaskRegistry.register: expected a Task, got {type(task).__name__}")
        with self._lock:
            if task.name in self._tasks:
                raise ValueError(f"TaskRegistry.register: a task named {task.name!r} is already registered")
            self._tasks[task.name] = task
        return task

    def get(self, name: str) -> Task:
        if name not in self._tasks:
            available = ", ".join(self._tasks) or "(none)"
            raise ValueError(f"unknown task {name!r}; available tasks: {available}")
        return self._tasks[name]

    def names(self) -> list[str]:
        return list(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)


_default: TaskRegistry | None = None
_default_lock = threading.Lock()


def _builtin_registry() -> TaskRegistry:
    # Imported here so that importing esper.tasks stays light (no mnist1d import).
    from esper.tasks.cifar10 import cifar10_task
    from esper.tasks.mnist1d import mnist1d_blind_task, mnist1d_task
    from esper.tasks.text import text_task

    registry = TaskRegistry()
    for task in (mnist1d_task(), mnist1d_blind_task(), cifar10_task(), text_task()):
        registry.register(task)
    return registry


def default_tasks() -> TaskRegistry:
    """The process's task registry (built-ins registered on first call)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = _builtin_registry()
        return _default
