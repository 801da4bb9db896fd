"""Command line, entry-point plumbing, preflight checks. May import every layer."""
