"""fedsilo.federation."""
