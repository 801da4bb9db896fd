"""The datamodule, batching, file sources and the sample set. Imports tokenization and base."""
