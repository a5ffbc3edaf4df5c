"""Model: the package CNN, a user's builder, and the routed names that reach them."""
