"""The embedded backend: an SQLite event log in the data directory (the default)."""
