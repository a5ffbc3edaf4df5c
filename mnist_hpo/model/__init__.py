"""Model: the package CNN, a user's builder, and the one name each hyperparameter has on the way to them."""
