"""Temporal workflows: they decide what happens to an invoice and when."""
