"""armflow.policies"""
