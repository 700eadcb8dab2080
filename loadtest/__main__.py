"""``python -m loadtest`` (the same as the ``voxwire-loadtest`` console script)."""

from loadtest.cli import main

if __name__ == "__main__":
    main()
