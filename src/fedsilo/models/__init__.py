"""fedsilo.models."""
