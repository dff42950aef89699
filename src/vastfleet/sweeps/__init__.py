"""Hyperparameter sweeps: one spec, many trials (Optuna), the rented instances following the runnable trials
under a dollar budget."""
