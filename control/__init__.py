"""armflow.control"""
