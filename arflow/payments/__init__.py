"""arflow.payments"""
