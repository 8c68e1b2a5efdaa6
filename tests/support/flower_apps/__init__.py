"""Flower apps written the way Flower's own examples write them, for fedops' Flower tests.

``quickstart_torch``: a Message API ClientApp (``@app.train()`` / ``@app.evaluate()``) on a
small torch model, as Flower's quickstart-pytorch; ``sklearn_logreg``: a NumPyClient
with a ``client_fn`` and ``ClientApp(client_fn=...)``, as Flower's sklearn-logreg
example. Both generate their data locally (scikit-learn's bundled digits), partitioned
by ``context.node_config``. ``pyproject.toml`` beside them is the Flower project's
``[tool.flwr.app.config]``, which fedops passes as ``context.run_config``.
"""
