"""fedsilo.report."""
