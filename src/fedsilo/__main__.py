"""``python -m fedsilo`` = the ``fedsilo`` command."""

from fedsilo.cli import main

raise SystemExit(main())
