"""Tasks: a model plus each site's data. Built-in ones and user files share one shape."""

from fedops.tasks.contract import Task
from fedops.tasks.loader import BUILTIN_TASKS, load_task

__all__ = ["BUILTIN_TASKS", "Task", "load_task"]
