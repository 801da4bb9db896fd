"""LightningModule, callbacks, schedules, export, run records. Imports evaluation, serving, data and below."""
