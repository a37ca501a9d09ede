"""Scoring any model on ShopBench-format data exactly as the KDD Cup 2024 evaluator did."""
