"""``python -m attnfit.predict`` = ``attnfit-predict``."""

from attnfit.cli.predict import main

if __name__ == "__main__":
    main()
