"""Reusable metrics, filters and generators behind the bundled probe tasks.

Task folders under ``tasks/`` reference these through ``!function`` helpers, and any
other lm-eval task can import them the same way (``lmeval_layerprune.probes.<module>``).
"""
