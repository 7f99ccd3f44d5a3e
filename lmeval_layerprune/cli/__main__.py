"""``python -m lmeval_layerprune.cli``: the same as the ``lmeval-prune`` console script."""

import sys

from . import main

sys.exit(main())
