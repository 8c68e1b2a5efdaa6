"""A Flower app found by ``module:attr``: its kind, its digest, its run config.

A team that already has a Flower ``ClientApp`` (the Message API, ``@app.train()`` /
``@app.evaluate()``, or one built from a ``client_fn``), a ``client_fn`` or a
``NumPyClient`` factory runs it unchanged as a fedops site: this module finds it,
checks it the way a task module is checked (its sha256 against the site's
``allowed_tasks`` before any of its code runs), and says which of Flower's two
protocols drives it (:mod:`fedops.tasks.flower_calls`).

Importable without torch and without Flower: ``flwr`` is an optional extra, imported
only when an app is asked for, and its absence is a :class:`FlowerAppError` that
says how to install it. The refusals a Flower app site shares between the
simulator and the agent are written here once.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from fedops.tasks.builtin import TaskError

__all__ = [
    "INSTALL_HINT",
    "LOCAL_DP_REFUSAL",
    "MONITORING_REFUSAL",
    "FlowerApp",
    "FlowerAppError",
    "load_flower_app",
    "require_flwr",
    "split_spec",
]

INSTALL_HINT = "pip install 'fedops[flower]'"

#: why a Flower app site refuses local DP: DP-SGD is fedops' own training loop
LOCAL_DP_REFUSAL = (
    "local DP (privacy=local, --privacy local; a site's --max-epsilon / --dp-public-records) "
    "trains with fedops' DP-SGD loop and accounts every step, and a Flower app trains in its "
    "own loop, which fedops cannot clip, noise or count: use central or distributed DP "
    "(privacy=central / distributed), which act on the update the app returns"
)
#: why a Flower app site refuses drift and fairness monitoring: the data stays in the app
MONITORING_REFUSAL = (
    "drift and fairness monitoring (monitoring=default, --monitoring auto/default) reads the "
    "site's training rows and runs its model on them, and a Flower app keeps both to itself: "
    "run with monitoring=none (fedops simulate) / --monitoring none (fedops coordinator)"
)


class FlowerAppError(TaskError):
    """A Flower app that cannot be found, loaded or driven; the message says why."""


def require_flwr() -> ModuleType:
    """The installed ``flwr``, or a :class:`FlowerAppError` naming the extra to install."""
    try:
        return importlib.import_module("flwr")
    except ImportError as exc:
        raise FlowerAppError(
            f"running a Flower app needs Flower (flwr), which is not installed: {INSTALL_HINT}"
        ) from exc


def split_spec(spec: str) -> tuple[str, str]:
    """``"pkg.module:app"`` -> ``("pkg.module", "app")``; anything else is refused."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr.isidentifier():
        raise FlowerAppError(
            f"{spec!r} is not module:attr (e.g. my_project.client_app:app): the module "
            "holding the ClientApp, client_fn or NumPyClient factory, and its name there"
        )
    return module, attr


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowerApp:
    """A loaded Flower app, ready for :class:`fedops.tasks.flower_site.FlowerSite`.

    Attributes:
        spec: ``module:attr`` as given.
        app: a ``flwr`` ``ClientApp`` (a bare ``client_fn`` or factory is wrapped in one,
            as Flower itself would wrap it).
        message_api: whether the app registered ``@app.train()`` / ``@app.evaluate()``
            (the Message API) rather than being built from a ``client_fn``.
        digest: sha256 of the app's package sources (what ``allowed_tasks`` lists).
        run_config: the ``[tool.flwr.app.config]`` of the app's Flower project (its
            ``pyproject.toml``), flattened as Flower flattens it; empty without one.
        initial: the model's first parameters for a Message API app, which has none of
            its own (in Flower its ServerApp supplies ``initial_arrays``): a callable from
            ``flower_initial`` / ``--flower-initial``.
    """

    spec: str
    app: Any
    message_api: bool
    digest: str
    run_config: dict[str, Any] = field(default_factory=dict)
    initial: Callable[[], Any] | None = None


def load_flower_app(
    spec: str, *, initial: str | None = None, allowed: Sequence[str] = ()
) -> FlowerApp:
    """Find and import the app named by ``spec`` (``module:attr``).

    The module is looked up on ``PYTHONPATH`` and in the current directory (where
    ``flwr run .`` would find a Flower project). ``initial`` (``module:attr``) names a
    callable returning the model's first parameters. ``allowed``: the site's allowed
    digests, checked before the module runs (:class:`~fedops.tasks.loader.TaskNotAllowed`).
    """
    module_name, attr = split_spec(spec)
    require_flwr()
    module, digest = _import(module_name, spec, allowed)
    target = getattr(module, attr, None)
    if target is None:
        raise FlowerAppError(f"{spec}: module {module_name!r} has no {attr!r}")
    app, message_api = _as_client_app(target, spec)
    return FlowerApp(
        spec=spec,
        app=app,
        message_api=message_api,
        digest=digest,
        run_config=_run_config(module),
        initial=_initial(initial, allowed) if initial else None,
    )


def _import(module_name: str, spec: str, allowed: Sequence[str]) -> tuple[ModuleType, str]:
    from fedops.tasks.loader import TaskNotAllowed, import_checked

    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)  # last: the app's module never shadows an installed one
    try:
        return import_checked(module_name, allowed=allowed)
    except TaskNotAllowed:
        raise
    except TaskError as exc:
        raise FlowerAppError(
            f"{spec}: cannot import {module_name!r} (looked up on PYTHONPATH and in {here}): {exc}"
        ) from exc


def _as_client_app(target: Any, spec: str) -> tuple[Any, bool]:
    """``(ClientApp, is it a Message API app)`` for a ClientApp, client_fn or factory."""
    from flwr.clientapp import ClientApp

    if isinstance(target, ClientApp):
        # ClientApp keeps no public record of how it was built: a client_fn app holds the
        # wrapped function in ``_call`` (flwr is pinned below 2, where this is so)
        return target, getattr(target, "_call", None) is None
    if not callable(target):
        raise FlowerAppError(
            f"{spec} is a {type(target).__name__}; expected a flwr ClientApp, a "
            "client_fn(context) or a NumPyClient factory"
        )
    return ClientApp(client_fn=_client_fn(target)), False


def _client_fn(factory: Callable[..., Any]) -> Callable[[Any], Any]:
    """``client_fn(context) -> Client`` from a ``client_fn`` or a no-argument factory (a
    NumPyClient class), its NumPyClient turned into a Client as Flower asks."""
    from flwr.client import NumPyClient

    try:
        takes_context = bool(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        takes_context = True

    def client_fn(context: Any) -> Any:
        client = factory(context) if takes_context else factory()
        return client.to_client() if isinstance(client, NumPyClient) else client

    return client_fn


def _initial(spec: str, allowed: Sequence[str]) -> Callable[[], Any]:
    module_name, attr = split_spec(spec)
    module, _ = _import(module_name, spec, allowed)
    made = getattr(module, attr, None)
    if not callable(made):
        raise FlowerAppError(
            f"flower_initial {spec}: not a callable returning the model's first parameters "
            "(a torch module, its state_dict, an ArrayRecord or a list of numpy arrays)"
        )
    return made  # type: ignore[no-any-return]


def _run_config(module: ModuleType) -> dict[str, Any]:
    """The app's ``[tool.flwr.app.config]``: from the first ``pyproject.toml`` above its
    module (its Flower project's), flattened with dots as Flower flattens it."""
    from flwr.common.config import flatten_dict

    start = Path(getattr(module, "__file__", "") or ".").resolve().parent
    for folder in (start, *start.parents):
        project = folder / "pyproject.toml"
        if project.is_file():
            with project.open("rb") as fh:
                table = tomllib.load(fh)
            config = table.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
            return dict(flatten_dict(config))
    return {}
