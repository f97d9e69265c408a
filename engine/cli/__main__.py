"""``python -m engine.cli``: the ``tpp`` command line."""

import sys

from . import main

sys.exit(main())
