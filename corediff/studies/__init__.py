"""Declarative studies: comparisons with seeds and confidence intervals."""
