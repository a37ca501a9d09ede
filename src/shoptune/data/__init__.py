"""Mixtures: which capabilities and subtasks, how many examples, cleaned and saved reproducibly."""
