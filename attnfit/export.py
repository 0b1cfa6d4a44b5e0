"""``python -m attnfit.export`` = ``attnfit-export``."""

from attnfit.cli.export import main

if __name__ == "__main__":
    main()
