"""fedsilo.data."""
