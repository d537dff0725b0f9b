"""``python -m jaxsaver``: the ``jaxsaver`` command line."""

from jaxsaver.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
