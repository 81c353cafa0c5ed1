"""The contract between a quantizer and the pipeline: specs, the annotation a quantizer
writes on nodes, the Quantizer base class, the checks prepare runs on what it wrote, and the
sharing groups built from it."""
