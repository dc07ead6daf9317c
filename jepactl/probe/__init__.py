"""The probe room: heads trained on a feature cache, selected honestly, and their results.

``heads`` (linear, attentive, the reference's attentive form), ``train`` (one training loop
for all of them), ``select`` (model selection on held-out training clips), ``result`` (the
result file and summaries over seeds) and ``synth_motion`` (the one-shot Table 6 scoring).
Reads caches through :mod:`jepactl.features.cache` only.
"""
