"""armflow.data"""
