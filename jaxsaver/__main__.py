"""``python -m jaxsaver``: the ``jaxsaver`` command line."""

from jaxsaver.cli import main

raise SystemExit(main())
