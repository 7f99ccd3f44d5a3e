"""``python -m lmeval_layerprune.cli``: the same as the ``lmeval-prune`` console script."""

import sys

from lmeval_layerprune.cli import main

sys.exit(main())
