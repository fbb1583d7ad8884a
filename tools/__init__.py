"""Development tools (not shipped with the product)."""
