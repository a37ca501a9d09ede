"""Capabilities, subtasks and how their examples are shown to a model."""
