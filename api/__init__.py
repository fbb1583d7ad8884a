"""The thin HTTP API: validate, hand to the workflow or read from the database."""
