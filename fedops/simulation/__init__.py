"""The simulation runtime: many virtual sites in one process, same driver."""
