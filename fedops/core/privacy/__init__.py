"""Differential privacy: clipping, noise, accounting (Opacus's accountants) and budgets.

Pure functions over arrays; randomness is passed in as a numpy Generator.
"""
