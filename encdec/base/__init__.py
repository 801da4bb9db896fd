"""Helpers every layer may use: the error type, name resolution (folder, mirror, cache, Hub), JSON files, ranks.
Imports nothing from encdec."""
