"""``python -m smtpproto_adapters``: the ``smtpproto`` command line (see :mod:`smtpproto_adapters.cli`)."""

from .cli import main

raise SystemExit(main())
