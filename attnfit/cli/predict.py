"""``attnfit-predict``: predictions (and attention heat maps) from a saved model.

Free text never goes through Hydra's override grammar: ``text=``, ``question=`` and ``context=`` are taken off
the command line as they are (CJK, commas, quotes, brackets, ``=`` signs; one pair of surrounding quotes is
dropped), and a lone ``-`` reads the inputs from standard input, one a line.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from attnfit.cli import CONFIG_DIR, explain_unknown_keys, run_or_explain

FREE_TEXT_KEYS = ("text", "question", "context")
_free_text: dict[str, Any] = {}


def take_free_text(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``(the arguments Hydra should see, {key: raw text})``; ``-`` gives ``{"stdin": True}``."""
    kept, texts = [], {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+") in FREE_TEXT_KEYS:
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            texts[key.lstrip("+")] = value
        elif arg == "-":
            texts["stdin"] = True
        else:
            kept.append(arg)
    return kept, texts


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def _main(cfg: DictConfig) -> object:
    from attnfit.recipes.predict import predict  # imported here so that --help stays fast

    free = dict(_free_text)
    if free.pop("stdin", False):
        free["lines"] = sys.stdin.read().splitlines()
    return run_or_explain(lambda c: predict(c, free), cfg)


def main() -> None:
    argv, texts = take_free_text(sys.argv[1:])
    sys.argv[1:] = argv
    _free_text.update(texts)
    with explain_unknown_keys("predict"):
        _main()


if __name__ == "__main__":
    main()
