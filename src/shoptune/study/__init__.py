"""The diversity study: a grid of mixtures x LoRA ranks x seeds, trained, scored and reported."""
