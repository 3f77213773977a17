"""``python -m palu_perta``: see :mod:`palu_perta.cli`."""

from .cli import main

raise SystemExit(main())
