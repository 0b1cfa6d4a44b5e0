"""``attnfit-export``: a portable model directory (safetensors + config + tokenizer)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from attnfit.cli import CONFIG_DIR, explain_unknown_keys, run_or_explain


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def _main(cfg: DictConfig) -> object:
    from attnfit.recipes.export import export_model  # imported here so that --help stays fast

    return run_or_explain(export_model, cfg)


def main() -> None:
    with explain_unknown_keys("export"):
        _main()


if __name__ == "__main__":
    main()
