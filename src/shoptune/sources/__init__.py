"""Readers of public e-commerce datasets, each turning one published format into tasks.records."""
