"""evaluate.py's steps, ROUGE, distributed evaluation, plots. Imports serving, data and below."""
