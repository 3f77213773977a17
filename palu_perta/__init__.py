"""palu-perta: a tutorial and reproduction package for two LLM unlearning methods.

PALU (prefix-aware localized unlearning) flattens the top-k logits at the onset of
sensitive spans; PerTA (per-parameter task arithmetic) subtracts a task vector rescaled
per parameter by forget-vs-retain importance. See ``docs/design.md`` for the exact formulas.
"""

__version__ = "0.1.0"
