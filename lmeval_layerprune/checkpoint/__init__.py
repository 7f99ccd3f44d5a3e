"""Pruned checkpoints on disk: loading with only the kept layers, materializing, the cache."""
