"""The run's environment: the Keras backend and device, seeds, library versions, a quiet terminal."""
