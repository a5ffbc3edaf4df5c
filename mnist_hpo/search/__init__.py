"""Search: the space, the scikit-learn and Optuna strategies, and the statistics that judge candidates."""
