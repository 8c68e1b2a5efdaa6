"""What both runtimes share: the round driver, the transport seam and the run store."""
