"""Model editing: locate a fact inside a trained language model and rewrite it.

Causal tracing (where a subject's facts are recalled), ROME (one rank-one update of one MLP),
MEMIT (many edits spread over several MLP layers) and a constrained fine-tuning baseline
(FT-L), measured with CounterFact's protocol on facts SmolLM2 actually knows. Each edit is a
model transform applied from outside the model (``apply_x(model, ...) -> model``). Chapter 19,
"Model editing".
"""
