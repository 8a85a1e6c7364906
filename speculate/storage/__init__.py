"""SQLite: the request log, the refinement queue and the answer cache."""
