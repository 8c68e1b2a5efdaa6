"""Data drift and fairness statistics, computed from counts a site may share (no raw data)."""
