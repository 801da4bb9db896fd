"""Tokenizers on `tokenizers`, SentencePiece folders, transformers' call conventions.
Imports encdec.nn and encdec.base."""
