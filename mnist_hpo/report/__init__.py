"""Report: tables and plots of a finished search, pure views of its results."""
