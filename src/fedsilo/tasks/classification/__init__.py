"""fedsilo.tasks.classification."""
