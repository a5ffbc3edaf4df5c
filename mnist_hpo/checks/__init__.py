"""Checks before anything trains: the composed command line, the config's values, what each fit will meet."""
