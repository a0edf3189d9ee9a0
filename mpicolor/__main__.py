"""``python -m mpicolor``: the same as the ``mpicolor`` console script."""

import sys

from mpicolor.cli import main

sys.exit(main())
