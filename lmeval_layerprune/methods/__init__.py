"""Which layers to remove: the methods behind one registry, and the resolver.

Importing this package registers the built-in methods (one module each). See
:mod:`~lmeval_layerprune.methods.registry` for how to add one.
"""

from lmeval_layerprune.methods import angular, block_influence, collapse, greedy, last  # noqa: F401  (register the built-ins)
