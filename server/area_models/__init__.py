"""Area-based models (issue 18): their table, /area-models and what the jobs read."""
