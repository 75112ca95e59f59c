"""``python -m sim`` is the same as the ``tiosim`` command."""

from sim.cli import main

raise SystemExit(main())
