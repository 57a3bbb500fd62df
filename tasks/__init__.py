"""Tasks: one module per task (prompt, dataset adapter, metric, recipe defaults) and the CLI glue.

``TASKS[name]`` is the task's :class:`~tasks.base.TaskSpec`. Only ``mmlora.cli`` (through
``mmlora.tasks.cli``) imports this package; the library never does.
"""
from .base import TaskSpec
from .speech import SpeechDataConfig

TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name]


from .speech import _register as _register_speech  # noqa: E402

_register_speech()

__all__ = ["TASKS", "TaskSpec", "get_task", "register", "SpeechDataConfig"]
