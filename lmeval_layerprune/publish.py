"""Deprecated alias of :mod:`lmeval_layerprune.hub` (cards and uploads), kept so older imports work."""

from .cli._shared import add_push_to_hub_argument, check_push_to_hub, push_after  # noqa: E402,F401
from .hub import *  # noqa: F403
from .hub import __all__  # noqa: F401
