"""``python -m fedsilo`` = the ``fedsilo`` command."""

from .cli import main

raise SystemExit(main())
