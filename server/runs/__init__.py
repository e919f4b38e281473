"""Runs: every job that makes products is kept as a run of its scan (store), listed per
scan at /scans/{id}/runs and deleted explicitly (views), documented in openapi_paths."""
