"""Federated datasets: every client's train/test rows in a few flat arrays.

A simulation of 10,000 clients cannot afford 10,000 dataset objects: the rows
of all clients live in one array, and ``offsets`` says where each client's
rows start and end. The built-in sources (digits, breast cancer, FedProx's
Synthetic(alpha, beta)) produce this form directly.
"""

from fedops.data.federated import FederatedData

__all__ = ["FederatedData"]
