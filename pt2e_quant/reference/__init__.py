"""The parts of the reference rewrite (:mod:`pt2e_quant.passes.rewrite_to_reference`).

``patterns``: the pattern language and the rule runner; ``torchao_forms``: torchao's patterns
and replacements; ``exact_forms``: ours, for what torchao has no pattern for.
"""
