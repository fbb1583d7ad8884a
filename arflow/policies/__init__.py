"""Dunning policies: the steps, ladder, charges and contact rules an invoice follows."""
