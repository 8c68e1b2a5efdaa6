"""The pure core: federated-learning decisions as plain functions over arrays.

Nothing in this package opens sockets or files, starts threads or reads clocks;
the deployment and simulation runtimes drive it with the same calls.
"""
