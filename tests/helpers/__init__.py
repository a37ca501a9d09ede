"""What several test modules share: a tiny model built in code, published-format fixtures, small file writers."""
