"""attnfit: build attention models from scratch, pretrain them and fine-tune them.

``model, tokenizer = attnfit.load_pretrained(path)`` loads an exported model, a run directory or a checkpoint.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# ``python -m attnfit.train`` (and .finetune, .eval, …) runs ``attnfit/cli/train.py``: the entry points' folder is
# part of this package's search path, so each verb exists once, in attnfit/cli.
__path__.append(__path__[0] + "/cli")
__all__ = ["__version__", "load_pretrained"]


def __getattr__(name: str) -> Any:
    if name == "load_pretrained":  # imported lazily: ``import attnfit`` stays cheap
        from attnfit.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'attnfit' has no attribute {name!r}")
