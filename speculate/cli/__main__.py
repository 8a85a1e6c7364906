"""``python -m speculate.cli``: the ``speculate`` command."""

import sys

from speculate.cli.main import main

sys.exit(main())
