"""transformers' API surface: outputs, the explicit-attention path, single-model class names, generate's extras.
Imports generation, tokenization, checkpoints, nn, base."""
