"""``python -m attnfit.eval`` = ``attnfit-eval``."""

from attnfit.cli.eval import main

if __name__ == "__main__":
    main()
