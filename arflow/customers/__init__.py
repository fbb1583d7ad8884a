"""arflow.customers"""
