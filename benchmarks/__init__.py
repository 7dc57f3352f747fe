"""fedsilo benchmarks: speed, memory, scale and quality, recorded in RESULTS.md by ``make bench``."""
