"""armflow.hardware"""
