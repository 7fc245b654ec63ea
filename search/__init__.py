"""The search around trials: run.py (the CLI), tuner.py (Tune/Train driver, searcher, scheduler, resume), spaces.py,
tracking.py (MLflow), stores.py (where every store lies), journal.py (state files), robustness.py (attack CLI)."""
