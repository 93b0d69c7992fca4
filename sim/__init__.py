"""armflow.sim"""
