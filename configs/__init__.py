"""armflow.configs"""
