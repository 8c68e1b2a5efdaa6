"""The batched backend on a federation too big for memory: each round loads its own clients.

The vectorized backend normally holds every client's rows in one
:class:`~fedops.data.FederatedData` (:func:`fedops.simulation.federation.load_federation`).
A run of 100,000 image clients of which 1,000 train per round cannot. Here
(``simulation.data``: ``auto``, the default, decides from a few sites' sizes; ``lazy``
forces it, ``memory`` refuses it) only the clients a round dispatches are loaded, as the
round starts:

- :func:`open_federation` loads up to four sites spread over the federation
  (:func:`sampled_sites`: site 0, the last and two between; all of a federation of four
  or fewer), estimates the whole federation as their mean bytes times the number of sites
  (:func:`estimate_bytes`; twice that for a task whose data changes per round: the drift
  reference and the round's window are both held) and, over half of the memory available
  (``MemAvailable``; on a GPU also half of its free memory), says so in one INFO line and
  hands the engine a :class:`LazyFederation` instead of every client's rows; under it,
  the other sites are read for the in-memory build against that same half, counting
  the bytes read: once a site far larger than the sampled ones puts them over it, the
  reading stops there, the rows read are dropped and the run goes lazy, said in one INFO
  line (sites and bytes read, memory available);
- :class:`LazyVectorizedTransport` is the batched transport itself, pointed at each
  dispatch at a :func:`~fedops.data.partial.partial_federation` of the dispatched
  clients: every other client present with no rows, so node ids, faults, shuffle seeds
  and privacy ledgers stay those of the whole federation and training, evaluation and
  reports are the in-memory run's (up to float summation order);
- a site is loaded through :func:`fedops.data.partial.load_site`, the in-memory path's
  call and checks: a malformed site fails the run with the same error (task, site, why),
  only when a round first uses it;
- loading is bounded by the round: a client is loaded once per round it takes part in
  (evaluation reuses the fit's rows; a static task's client picked again keeps its rows),
  and nothing holds more than the clients of the current round (about twice their rows
  while one round's arrays replace the last's);
- drift reference: a static task's is the data itself, as in memory; a task whose data
  changes per round compares with its round-0 window (what the in-memory run loads
  first), loaded again for the clients a monitored evaluation asks (their training rows
  kept, for as long as they stay asked), which supposes ``load_data(site, num_sites, 0)``
  gives the same rows each time it is called.

The trade: a round's clients are read from the task's storage every round (a static
task's only when newly picked), where the in-memory run reads each once; under ``auto``
a federation that fits is read whole as before (the sites read to size it, once each),
and one that does not reads its sampled sites other than site 0 again when a round picks
them (at most three reads more in the whole run, where keeping them would hold up to
three sites' rows for all of it); one found not to fit only while read whole reads each
site read until then again when a round picks it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedops.core.rounds import Phase
from fedops.core.training import TrainConfig
from fedops.data import FederatedData
from fedops.data.build import DataOverBudget, ReadBudget, from_task
from fedops.data.materialize import DataError
from fedops.data.partial import SiteRows, load_site, partial_federation, site_rows
from fedops.runtime.simulate_settings import SimulateConfig
from fedops.runtime.transport import Instruction
from fedops.simulation.federation import load_federation
from fedops.simulation.sim_transport import check_plain, client_index
from fedops.simulation.vectorized_backend import VectorizedTransport
from fedops.tasks import Task, load_task
from fedops.tasks.contract import TaskError
from fedops.tasks.monitor import takes_round

log = logging.getLogger("fedops.simulate")

#: the share of available memory the whole federation may take before it is loaded per
#: round: the in-memory build holds every site's arrays and their concatenation at once
MEMORY_SHARE = 0.5

#: sites read under ``auto`` to estimate the federation's size (site 0 among them): a few
#: reads that a federation that fits reuses, enough to see sizes trend over the indices
SAMPLED_SITES = 4


@dataclass(frozen=True)
class LazyFederation:
    """A task's federation loaded per round: the task, its size and its first site."""

    task: Task
    num_sites: int
    #: ``load_data`` takes the round: each round's rows are loaded for it
    round_aware: bool
    #: site 0 (of round 0 for a round-aware task): the shape every site must share
    first: SiteRows

    def load(self, site: int, server_round: int) -> SiteRows:
        """``site``'s rows of ``server_round`` (of any round, for a static task); data
        fedops cannot train on is the task's mistake (:class:`TaskError`), as at start-up."""
        try:
            return load_site(
                self.task, site, self.num_sites, server_round if self.round_aware else None
            )
        except DataError as exc:
            raise TaskError(str(exc)) from None

    def hold(self, sites: Mapping[int, SiteRows]) -> FederatedData:
        """``sites`` in flat arrays, every other client of the federation without rows."""
        return partial_federation(self.task.name, sites, self.num_sites, self.first)


def open_federation(cfg: SimulateConfig) -> tuple[Task, FederatedData | LazyFederation | None]:
    """:func:`load_federation`, unless the vectorized backend runs a task whose clients do
    not fit in memory (or ``simulation.data=lazy``): then a :class:`LazyFederation`."""
    s = cfg.simulation
    if s.backend != "vectorized" or not cfg.task or s.data == "memory":
        if s.data == "lazy":  # the batched backend fell back (backend_choice); said once
            log.warning("simulation.data=lazy has no effect on the %s backend", s.backend)
        return load_federation(cfg)
    task = load_task(cfg.task)
    round_aware = takes_round(task.load_data)
    first_round = 0 if round_aware else None  # round 0: the drift reference
    n = s.num_clients
    # lazy has nothing to decide: site 0 (the shape every site must share) is enough
    sampled = sampled_sites(n) if s.data == "auto" else [0]
    read = {site: load_site(task, site, n, first_round) for site in sampled}
    need = estimate_bytes(read, n) * (2 if round_aware else 1)
    basis = f"all {n:,} sites" if len(read) == n else f"mean of {len(read)} sites times {n:,}"
    per_round = s.clients_per_round or n
    if s.data == "auto":
        room = available_memory(s.device)
        if room is None or need <= MEMORY_SHARE * room:
            data = _read_whole(task, n, first_round, read, room, per_round)
            if data is not None:
                return task, data
        else:
            log.info(
                "federation data ~%s (from %s) > half of the %s available: loading the %s "
                "clients of each round as it starts",
                _size(need),
                basis,
                _size(room),
                f"{per_round:,}",
            )
    else:
        log.info(
            "simulation.data=lazy: loading the %s clients of each round as it starts "
            "(federation data ~%s, from site 0 times %s)",
            f"{per_round:,}",
            _size(need),
            f"{n:,}",
        )
    return task, LazyFederation(task, n, round_aware, read[0])


def _read_whole(
    task: Task,
    num_sites: int,
    first_round: int | None,
    read: Mapping[int, SiteRows],
    room: int | None,
    per_round: int,
) -> FederatedData | None:
    """Every site's rows in memory (``read``, the sampled sites, not read again), or None
    with one INFO line if, while the rest are read, the bytes read come to over the share
    of ``room`` the estimate was held to (twice the bytes for a round-aware task, as in the
    estimate): a site far larger than the sampled ones (:func:`estimate_bytes`) stops the
    reading once the federation is known not to fit, before all of it is held; one that
    fits is read whole. ``room`` None: nothing to hold it to."""
    splits = {site: (rows.train, rows.test) for site, rows in read.items()}
    if room is None:
        return from_task(task, num_sites, first_round, read=splits)
    factor = 1 if first_round is None else 2  # as the estimate: reference and window held
    budget = ReadBudget(int(MEMORY_SHARE * room), factor)
    try:
        return from_task(task, num_sites, first_round, read=splits, budget=budget)
    except DataOverBudget as over:  # the rows read go with it (its traceback's frame)
        log.info(
            "federation data ~%s+ (from the %s of %s sites read so far) > half of the %s "
            "available: loading the %s clients of each round as it starts",
            _size(over.need),
            f"{over.sites_read:,}",
            f"{num_sites:,}",
            _size(room),
            f"{per_round:,}",
        )
    return None


def sampled_sites(num_sites: int) -> list[int]:
    """The sites :func:`open_federation` reads to size a federation: site 0, the last and
    two evenly between (every site of a federation of four or fewer). Spread over the
    indices, they follow a federation whose sizes trend with the site (a partition by
    index, a sorted source) that site 0 alone misjudges; deterministic, so a run that
    fits reads the same sites first every time, and they are reused, not read again."""
    last = num_sites - 1
    return sorted({k * last // (SAMPLED_SITES - 1) for k in range(SAMPLED_SITES)})


def estimate_bytes(read: Mapping[int, SiteRows], num_sites: int) -> int:
    """The whole federation's bytes from the sites ``read``: their mean times
    ``num_sites`` (exact when every site was read).

    The mean, not a max-based bound: the largest site read times the number of sites is
    no bound either (a site not read may be larger still), and it would send every skewed
    federation (quantity skew is the norm in federated partitions) to the slower per-round
    path as if each site were its largest sampled one. The mean of sites spread over the
    federation is its estimate of the total; a site far larger than all four sampled is
    misjudged, and found while the in-memory build reads it (:func:`_read_whole`)."""
    return sum(rows.nbytes for rows in read.values()) * num_sites // len(read)


def available_memory(device: str) -> int | None:
    """Bytes this run may still take: ``MemAvailable`` (None where unknown), and on a GPU
    the smaller of that and the device's free memory (the batched backend copies the
    training rows there)."""
    room = _mem_available()
    if device in ("cuda", "auto") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        room = free if room is None else min(room, free)
    return room


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    try:  # not Linux: free physical pages, a lower bound of what is available
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:,.1f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:,.1f} MB"


class LazyVectorizedTransport(VectorizedTransport):
    """:class:`VectorizedTransport` holding only the clients of the round being dispatched.

    Before each dispatch the dispatched clients' rows are loaded (or kept from the last
    holding) into a partial federation the batched transport is pointed at; node ids
    stay ``site-<index in the whole federation>``."""

    def __init__(
        self,
        federation: LazyFederation,
        model: nn.Module,
        train: TrainConfig,
        *,
        reload: Callable[[int], FederatedData] | None = None,
        **options: Any,
    ) -> None:
        """``options``: :class:`VectorizedTransport`'s; ``reload`` (every client's data of
        a round) is not used: this transport loads each round's clients itself."""
        self.federation = federation
        first = {0: federation.first}
        super().__init__(federation.hold(first), model, train, **options)
        self._held_round = -1  # the round whose clients ``self.data`` holds
        #: the drift reference of a round-aware task (round-0 rows) of the clients asked
        self._drift_reference = self.data if federation.round_aware else None
        #: the clients (by index) ``self.data`` and ``self._drift_reference`` hold
        self._held: set[int] = {0}
        self._drift_referenced: set[int] = {0} if federation.round_aware else set()
        self.loads = 1  # sites loaded so far: site 0 sized the federation

    def dispatch(
        self, server_round: int, nodes: Sequence[str], instruction: Instruction
    ) -> dict[str, str]:
        check_plain(instruction)
        clients = {client_index(node) for node in nodes}
        self._hold(server_round, clients)
        if instruction.phase is Phase.EVALUATE and instruction.monitor is not None:
            self._hold_reference(clients)
        return super().dispatch(server_round, nodes, instruction)

    def _hold(self, server_round: int, clients: set[int]) -> None:
        """Point the transport at ``clients``' rows of ``server_round`` (the round's later
        dispatches: the clients held so far and these)."""
        same_round = server_round == self._held_round
        if same_round and clients <= self._held:
            return  # evaluation after the round's fit: its rows are held already
        # a static task's rows stay valid across rounds; a round-aware task's do not
        keep = self._held if same_round or not self.federation.round_aware else set()
        wanted = clients | self._held if same_round else clients
        rows = {
            c: site_rows(self.data, c) if c in keep else self._load(c, server_round)
            for c in sorted(wanted)
        }
        data = self.federation.hold(rows)
        del rows  # views of the last holding: let it go once copied
        self._use(data)
        log.debug(
            "round %d: %d clients held, %d sites loaded so far",
            server_round,
            len(wanted),
            self.loads,
        )
        self._held_round, self._held = server_round, wanted
        if not self.federation.round_aware:  # the data never changes: it is its reference
            self.monitor.reference = data

    def _hold_reference(self, clients: set[int]) -> None:
        """A round-aware task's drift reference for ``clients``: their round-0 rows."""
        if self._drift_reference is None or clients <= self._drift_referenced:
            return
        reference = self._drift_reference
        rows = {
            c: site_rows(reference, c)
            if c in self._drift_referenced
            else self._load(c, 0).train_only()
            for c in sorted(clients)
        }
        self._drift_reference = self.federation.hold(rows)
        self._drift_referenced = clients
        self.monitor.reference = self._drift_reference

    def _load(self, site: int, server_round: int) -> SiteRows:
        self.loads += 1
        return self.federation.load(site, server_round)
