"""arflow.invoices"""
