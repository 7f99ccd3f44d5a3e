"""Which layers to remove: importance metrics behind one registry, and the resolver."""
