"""``python -m attnfit.finetune`` = ``attnfit-finetune``."""

from attnfit.cli.finetune import main

if __name__ == "__main__":
    main()
