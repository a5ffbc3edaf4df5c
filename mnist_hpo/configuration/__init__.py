"""Configuration: the typed schema of every config group and the names a user may choose from."""
