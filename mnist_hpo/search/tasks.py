"""The tasks this project adds to a search's scikit-learn callback tree (scikit-learn names its own).

Named here, below the estimator, the Optuna search and the tracking that reads them
(``tracking/tasks.py``), so none of them imports another for a string.
"""

EPOCH_TASK = "epoch"  # one Keras epoch, a subtask of the fit's task
BATCH_TASK = "optuna-batch"  # one batch of Optuna trials, a subtask of the search task
