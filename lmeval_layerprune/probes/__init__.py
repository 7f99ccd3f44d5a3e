"""Reusable metrics, filters and generators behind the bundled probe tasks.

Task folders under ``tasks/`` reference these through ``!function`` helpers, and any
other lm-eval task can import them the same way (``lmeval_layerprune.probes.<module>``).
A metric that cannot score some items returns ``nan`` for them and is aggregated with
:mod:`lmeval_layerprune.probes.scoring` (not scorable is missing, not zero); tokens and
sentences for the degeneration metrics come from :mod:`lmeval_layerprune.probes.text`.
The same metrics as ``evaluate`` modules: :mod:`lmeval_layerprune.metrics`.
"""
