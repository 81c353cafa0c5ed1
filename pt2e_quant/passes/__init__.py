"""Graph passes. Each file holds one verb-named pass ``fn(gm) -> bool`` (True if it changed the
graph); :mod:`pt2e_quant.passes.driver` runs them."""
