"""``python -m ditkit.cli``: the ``ditkit`` command."""

import sys

from . import main

sys.exit(main())
