"""arflow.agency"""
