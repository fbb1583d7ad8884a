"""arflow.reports"""
