"""Summarizer, building and loading models for serving (folder, Hub id, .ckpt), int8, devices.
Imports encdec.model and below."""
