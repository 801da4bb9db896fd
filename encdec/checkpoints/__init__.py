"""Hugging Face weight files and key layouts. Imports encdec.nn and encdec.base."""
