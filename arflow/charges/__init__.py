"""arflow.charges"""
