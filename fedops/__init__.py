"""fedops: federated learning with privacy built in."""

__version__ = "0.1.0"
