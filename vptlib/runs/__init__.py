"""One run: its configuration, staging, training, evaluation, and the record it leaves."""
