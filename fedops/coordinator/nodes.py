"""Who is connected: node ids, their bearer tokens, and when each was last heard from.

One node per site: a site that registers again replaces its node. Otherwise
one site (one certificate in kit mode, one name without) could register any
number of nodes and be counted that many times by ``--min-clients``, cohort
sampling, robust aggregation's f and SecAgg neighbourhoods (issue 17).

Bounded: at most ``max_nodes`` live nodes (``--max-nodes``; a registration of a
new site past it is refused, a site that registers again is not), and the
names of removed nodes, kept for the records, only for the last
``HISTORY_FACTOR x max_nodes`` of them: without a kit anyone can register
under new names, and neither may grow without end.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from fedops.wire.codec import shown

#: live nodes a coordinator holds by default (``--max-nodes``)
DEFAULT_MAX_NODES = 10_000
#: names of removed nodes kept for the records, as a multiple of ``max_nodes``
HISTORY_FACTOR = 4


#: node ids and tokens are fedops' own, far shorter; longer ones are refused unread
MAX_TOKEN_CHARS = 128


class Unauthenticated(Exception):
    """A call named a node that is unknown, or with the wrong token."""


class RegistryFull(Exception):
    """A new site registered while the coordinator holds its maximum of live nodes."""


@dataclass(slots=True, kw_only=True)
class Node:
    node_id: str
    token: str
    site_name: str
    num_train_examples: int
    last_seen: float
    #: has polled for a task: a registration whose reply was lost (the agent
    #: timed out and registered again) never polls, and is never given work
    polled: bool = False


class NodeRegistry:
    """Thread-safe map of registered nodes (the gRPC handlers run on a pool)."""

    def __init__(self, max_nodes: int = DEFAULT_MAX_NODES) -> None:
        if max_nodes < 1:
            raise ValueError(f"max_nodes must be at least 1, got {max_nodes}")
        self.max_nodes = max_nodes
        self._nodes: dict[str, Node] = {}
        # kept after removal, for the records (the oldest removed forgotten first)
        self._site_names: OrderedDict[str, str] = OrderedDict()
        self._node_of_site: dict[str, str] = {}  # each site's one live node
        self._lock = threading.Lock()
        self._counter = 0

    def register(self, site_name: str, num_train_examples: int) -> tuple[Node, str | None]:
        """A new node for ``site_name``, and the node it replaces (removed), if any."""
        with self._lock:
            replaced = self._node_of_site.get(site_name)
            if replaced is None and len(self._nodes) >= self.max_nodes:
                raise RegistryFull(
                    f"the coordinator holds its maximum of {self.max_nodes} nodes "
                    "(--max-nodes): no new site can register"
                )
            if replaced is not None:
                self._nodes.pop(replaced, None)
            self._counter += 1
            node = Node(
                node_id=f"node-{self._counter:04d}-{secrets.token_hex(3)}",
                token=secrets.token_urlsafe(24),
                site_name=site_name,
                num_train_examples=num_train_examples,
                last_seen=time.monotonic(),
            )
            self._nodes[node.node_id] = node
            self._site_names[node.node_id] = site_name
            self._node_of_site[site_name] = node.node_id
            self._forget_oldest()
            return node, replaced

    def _forget_oldest(self) -> None:
        """Drop the oldest names of removed nodes past the history bound (lock held)."""
        excess = len(self._site_names) - HISTORY_FACTOR * self.max_nodes
        for node_id in list(self._site_names):
            if excess <= 0:
                break
            if node_id not in self._nodes:
                del self._site_names[node_id]
                excess -= 1

    def authenticate(self, node_id: str, token: str) -> Node:
        """The node, touched; raise :class:`Unauthenticated` on any mismatch."""
        if len(token) > MAX_TOKEN_CHARS or len(node_id) > MAX_TOKEN_CHARS:
            # ours are short: a megabyte token is refused before any work (or lock)
            raise Unauthenticated(f"unknown node {shown(node_id)} or wrong token: register again")
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or not hmac.compare_digest(node.token.encode(), token.encode()):
                raise Unauthenticated(
                    f"unknown node {shown(node_id)} or wrong token: register again"
                )
            node.last_seen = time.monotonic()
            return node

    def mark_polled(self, node_id: str) -> bool:
        """Note that the node asked for work; True the first time (it just became available)."""
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or node.polled:
                return False
            node.polled = True
            return True

    def get(self, node_id: str) -> Node | None:
        with self._lock:
            return self._nodes.get(node_id)

    def site_name(self, node_id: str) -> str:
        """The site name a node registered with, even after it was removed."""
        with self._lock:
            return self._site_names.get(node_id, node_id)

    def remove(self, node_id: str) -> None:
        with self._lock:
            node = self._nodes.pop(node_id, None)
            if node is not None and self._node_of_site.get(node.site_name) == node_id:
                del self._node_of_site[node.site_name]

    def node_ids(self, *, polled: bool = False) -> list[str]:
        """Registered nodes (``polled``: only those that have asked for work)."""
        with self._lock:
            return [n.node_id for n in self._nodes.values() if n.polled or not polled]

    def silent_since(self, seconds: float) -> list[str]:
        """Nodes not heard from (pull, heartbeat, push) for ``seconds``."""
        cutoff = time.monotonic() - seconds
        with self._lock:
            return [n.node_id for n in self._nodes.values() if n.last_seen < cutoff]
