"""fedsilo.tasks."""
