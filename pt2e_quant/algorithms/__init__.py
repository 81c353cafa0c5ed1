"""Accuracy algorithms around the pipeline: better activation and weight ranges (range
estimators), SmoothQuant's scale migration, bias correction and the accuracy-aware float
fallback. Each works with any quantizer, ours or a vendor's: it rewrites the float graph
before annotation, adjusts the annotations after it, or edits a calibrated prepared model,
and ``quantize()`` runs them in that order."""
