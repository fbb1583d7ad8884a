"""arflow.legal"""
