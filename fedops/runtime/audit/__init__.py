"""A party's audit log on disk (log_file.py) and what a run writes into it (run_trail.py).

The entries and their verification are pure (:mod:`fedops.core.audit`); the
reports built from logs are in :mod:`fedops.reporting.audit`.
"""
