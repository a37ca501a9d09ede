"""The raw data: its records, one reader per source, the table of sources with their licences, the held-out
partition, and the teacher client."""
