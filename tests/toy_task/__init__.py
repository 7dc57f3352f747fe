"""A task that is not part of fedsilo: linear regression on vectors, one folder and one registry
line (``TASKS["toy-regression"] = "toy_task.task:ToyRegression"``) away from every engine and report."""
