"""fedsilo.augment."""
