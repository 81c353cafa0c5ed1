"""``python -m pt2e_quant``: the ``pt2e-quant`` command line (see :mod:`pt2e_quant.cli`)."""

from pt2e_quant.cli import main

raise SystemExit(main())
