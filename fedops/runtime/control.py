"""Start and stop a run from outside: what an admin's commands change in the driver.

The driver asks :meth:`RunControl.before_round` (through the round plug-in
:class:`AdminControl`) before every round: it waits
there while the run has not been started (``--wait-for-start``) and raises
:class:`RunStopped` once an admin asked to stop, so a stop always lands
between rounds and never leaves a half-aggregated model.
"""

from __future__ import annotations

import threading

from fedops.runtime.round_plugin import RoundContext, RoundPlugin


class RunStopped(Exception):
    """An admin stopped the run; the message says who and why."""


class RunControl:
    """State shared by the admin service (gRPC threads) and the round driver."""

    def __init__(self, *, rounds_planned: int, started: bool = True) -> None:
        self.rounds_planned = rounds_planned
        self._started = threading.Event()
        if started:
            self._started.set()
        self._stop_reason: str | None = None
        self._lock = threading.Lock()
        self.round = 0
        self.finished = False

    @property
    def state(self) -> str:
        if self.finished:
            return "finished"
        if self._stop_reason is not None:
            return "stopping"
        return "running" if self._started.is_set() else "waiting_for_start"

    @property
    def stop_reason(self) -> str | None:
        """Why a stop was asked for (None: none was)."""
        return self._stop_reason

    def start(self) -> bool:
        """Let the rounds begin; False if the run was already started."""
        already = self._started.is_set()
        self._started.set()
        return not already

    def stop(self, reason: str) -> bool:
        """Stop before the next round; False if a stop was already asked for."""
        with self._lock:
            if self._stop_reason is not None:
                return False
            self._stop_reason = reason
        self._started.set()  # a run stopped before it started must not wait for ever
        return True

    def before_round(self, server_round: int, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for the start; raise :class:`RunStopped` if stopped."""
        if not self._started.wait(timeout_s):
            raise RunStopped(f"no admin started the run within {timeout_s:.0f} s")
        with self._lock:
            if self._stop_reason is not None:
                raise RunStopped(
                    f"stopped before round {server_round} by an admin: {self._stop_reason}"
                )

    def committed(self, server_round: int) -> None:
        self.round = server_round


class AdminControl(RoundPlugin):
    """:class:`RunControl` as a round plug-in: the hold or stop lands between rounds."""

    def __init__(self, control: RunControl) -> None:
        self.control = control

    def before_round(self, ctx: RoundContext, server_round: int) -> None:
        self.control.before_round(server_round, ctx.config.join_timeout_s)

    def committed(self, ctx: RoundContext, server_round: int) -> None:
        self.control.committed(server_round)
