"""The deployment coordinator: a gRPC shell around the round driver."""
