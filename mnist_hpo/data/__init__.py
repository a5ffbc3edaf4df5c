"""Data: MNIST from the embedded subset, Keras' cache or a user's files, format-checked when read."""
