"""armflow.workflows"""
