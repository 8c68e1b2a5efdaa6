"""sklearn-logreg: a Flower NumPyClient (client_fn + ClientApp) on digits, no torch."""

import warnings

import numpy as np
from flwr.app import Context
from flwr.client import ClientApp, NumPyClient
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

N_CLASSES, N_FEATURES = 10, 64


def load_data(partition_id: int, num_partitions: int):
    x, y = load_digits(return_X_y=True)
    x, y = x[partition_id::num_partitions] / 16.0, y[partition_id::num_partitions]
    cut = int(0.8 * len(y))
    return x[:cut], x[cut:], y[:cut], y[cut:]


def get_model_params(model: LogisticRegression) -> list[np.ndarray]:
    return [model.coef_, model.intercept_]


def set_model_params(model: LogisticRegression, params: list[np.ndarray]) -> LogisticRegression:
    model.coef_ = params[0]
    model.intercept_ = params[1]
    return model


def set_initial_params(model: LogisticRegression) -> None:
    model.classes_ = np.arange(N_CLASSES)
    model.coef_ = np.zeros((N_CLASSES, N_FEATURES))
    model.intercept_ = np.zeros((N_CLASSES,))


class FlowerClient(NumPyClient):
    def __init__(self, model, x_train, x_test, y_train, y_test):
        self.model = model
        self.x_train, self.x_test = x_train, x_test
        self.y_train, self.y_test = y_train, y_test

    def get_parameters(self, config):
        return get_model_params(self.model)

    def fit(self, parameters, config):
        set_model_params(self.model, parameters)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_iter is the local epochs: it never converges
            self.model.fit(self.x_train, self.y_train)
        return get_model_params(self.model), len(self.x_train), {}

    def evaluate(self, parameters, config):
        set_model_params(self.model, parameters)
        probs = self.model.predict_proba(self.x_test)
        loss = log_loss(self.y_test, probs, labels=list(range(N_CLASSES)))
        accuracy = self.model.score(self.x_test, self.y_test)
        return loss, len(self.x_test), {"accuracy": accuracy}


def client_fn(context: Context):
    partition_id = context.node_config["partition-id"]
    num_partitions = context.node_config["num-partitions"]
    x_train, x_test, y_train, y_test = load_data(partition_id, num_partitions)
    model = LogisticRegression(max_iter=context.run_config["local-epochs"], warm_start=True)
    set_initial_params(model)
    return FlowerClient(model, x_train, x_test, y_train, y_test).to_client()


app = ClientApp(client_fn=client_fn)
