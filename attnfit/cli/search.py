"""``attnfit-search``: hyper-parameter search with Optuna (pruning, resume). See configs/hparams_search/.

attnfit-search hparams_search=optuna [OVERRIDES]
attnfit-search --config-name finetune hparams_search=optuna_finetune pretrained=RUN_DIR [OVERRIDES]
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from attnfit.cli import CONFIG_DIR, check_run_dir_arguments, run_or_explain


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    return run_or_explain(search, cfg)


def main() -> None:
    check_run_dir_arguments(sys.argv[1:])
    _main()


def search(cfg: DictConfig) -> float | None:
    """Run the search in ``cfg.search`` on the entry point's config; returns the best trial's objective."""
    from hydra.core.hydra_config import HydraConfig

    from attnfit.errors import ConfigError

    if not cfg.get("search"):
        raise ConfigError("attnfit-search needs a search space: hparams_search=optuna (see configs/hparams_search/)")
    from attnfit.runs.search import override_key, run_search  # imported here so that --help stays fast

    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if override_key(o) != "hparams_search"]
    # Trials are composed anew: they need the command line's extra config directories too.
    overrides += [o for o in hydra_cfg.overrides.hydra if override_key(o) == "hydra.searchpath"]
    return run_search(cfg, hydra_cfg.job.config_name, overrides)["objective"]


if __name__ == "__main__":
    main()
