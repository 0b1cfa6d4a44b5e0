"""The task table: ``task.name`` → the module implementing it. Adding a task is one module and one line here.

Modules are imported on first use, so loading a saved model imports only its own task (and no Lightning).
"""

from __future__ import annotations

import importlib

from attnfit.errors import check_choice
from attnfit.tasks.base import Prepared, Task

TASKS: dict[str, str] = {
    "mlm": "attnfit.tasks.language_modeling:MaskedLM",
    "clm": "attnfit.tasks.language_modeling:CausalLM",
    "electra": "attnfit.tasks.electra:Electra",
    "classification": "attnfit.tasks.classification:Classification",
    "seq2seq": "attnfit.tasks.seq2seq:Seq2Seq",
    "qa": "attnfit.tasks.qa:QuestionAnswering",
}

_instances: dict[str, Task] = {}


def get_task(name: str) -> Task:
    """The :class:`Task` registered as ``name``; ConfigError listing the choices otherwise."""
    check_choice("task", name, TASKS)
    if name not in _instances:
        module, _, cls = TASKS[name].partition(":")
        _instances[name] = getattr(importlib.import_module(module), cls)()
    return _instances[name]


__all__ = ["TASKS", "Prepared", "Task", "get_task"]
