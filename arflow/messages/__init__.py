"""arflow.messages"""
