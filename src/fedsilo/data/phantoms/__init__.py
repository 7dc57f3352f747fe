"""fedsilo.data.phantoms."""
