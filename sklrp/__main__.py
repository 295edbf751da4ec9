"""``python -m sklrp audit ...``: the same as the ``sklrp`` console script."""

import sys

from .cli import main

sys.exit(main())
