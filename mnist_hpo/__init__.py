"""Config-driven hyperparameter search over Keras CNNs on MNIST, tracked in MLflow."""
