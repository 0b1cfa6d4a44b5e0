"""``attnfit-serve checkpoint=RUN``: the model behind an HTTP JSON API (FastAPI + uvicorn), explorer page at ``/``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from attnfit.cli import CONFIG_DIR, explain_unknown_keys, run_or_explain


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve")
def _main(cfg: DictConfig) -> object:
    from attnfit.recipes.serve import serve  # imported here so that --help stays fast

    return run_or_explain(serve, cfg)


def main() -> None:
    with explain_unknown_keys("serve"):
        _main()


if __name__ == "__main__":
    main()
