"""``attnfit-train``: pretrain a masked or causal language model. ``attnfit-train --help`` lists the config groups."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from attnfit.cli import CONFIG_DIR, explain_unknown_keys, run_or_explain


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    from attnfit.recipes.run import run  # imported here so that --help stays fast

    return run_or_explain(run, cfg)


def main() -> None:
    with explain_unknown_keys("train"):
        _main()


if __name__ == "__main__":
    main()
