"""fedsilo.data.sources."""
