"""The client agent: dials out to a coordinator and runs a site's tasks."""
