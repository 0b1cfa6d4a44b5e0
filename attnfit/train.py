"""``python -m attnfit.train`` = ``attnfit-train``."""

from attnfit.cli.train import main

if __name__ == "__main__":
    main()
