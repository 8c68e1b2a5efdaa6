"""fedops' simulator against Flower's simulation runtime, same workload, in one run.

The issue's goal: at 1000 clients per round, fedops >= 20x faster per round than
Flower's simulation (``flwr[simulation]``, Ray backend) at equal accuracy (+-1 point),
with >= 5x lower peak memory. Both frameworks run the same federation:

* data: FedProx's Synthetic(1, 1) from ``fedops.data.synthetic`` (seed 0), one
  partition per client, generated once per framework run;
* model: logistic regression ``nn.Sequential(nn.Flatten(), nn.Linear(60, 10))``,
  the same initial weights (``torch.manual_seed(seed)`` before building it);
* local training: 1 epoch of SGD, batch 10, lr 0.01, rows shuffled with the same
  per-(seed, round, client) seed fedops uses, so both run the same computation;
* every client trains and evaluates every round; FedAvg weighted by examples;
* accuracy: example-weighted accuracy of the final global model over every client's
  test rows, computed by this script from each framework's final parameters.

fedops runs through ``fedops.simulation.engine.run_simulation`` (vectorized backend,
run store with checkpoints and metrics), Flower through ``flwr.simulation.run_simulation``
with a ServerApp driving Flower's own ``flwr.serverapp.strategy.FedAvg`` and a ClientApp
(Message API) on Ray virtual clients. Each framework run is its own subprocess; a
background thread here sums the RSS (and PSS) of that process's whole tree (driver,
Ray's GCS/raylet/agents, Ray workers) from /proc, so peaks never mix.

    python benchmarks/vs_flower.py                      # --clients 100 1000 --rounds 3
    python benchmarks/vs_flower.py --clients 50 --rounds 2 --timeout 300

Configurations, one subprocess each per size: fedops with torch's default threads and with
1 thread (``--fedops-threads 0 1``); Flower with ``client_resources.num_cpus`` 1 and 0.5 per
virtual client on ``ray.init(num_cpus=2)``, i.e. 2 and 4 actors (``--flower-client-cpus 1 0.5``).

Per-round time excludes one-time start-up, reported separately: for fedops, from the
``run_simulation`` call to the round-0 checkpoint; for Flower, from the ``run_simulation``
call until Ray is up and warm-up queries (4 per actor) came back. "s/round" is the median
of rounds 2..R; round 1 (lazy one-time costs in both frameworks) is shown on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FRAMEWORKS = ("fedops", "flower")
WARMUP_MESSAGES_PER_ACTOR = 4


# --------------------------------------------------------------------------------------
# Shared by both frameworks' children
# --------------------------------------------------------------------------------------
def build_model(num_features: int, num_classes: int, seed: int):  # type: ignore[no-untyped-def]
    """The same freshly initialised logistic regression fedops builds for round 0."""
    import torch
    from torch import nn

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(num_features, num_classes))


@functools.cache
def test_rows(clients: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every client's test rows of the benchmark's federation (the same generator, seed)."""
    from fedops.data.synthetic import synthetic

    data = synthetic(num_clients=clients, alpha=1.0, beta=1.0, seed=seed)
    return data.test_x, data.test_y


def global_accuracy(params: dict[str, np.ndarray], test_x: np.ndarray, test_y: np.ndarray):  # type: ignore[no-untyped-def]
    """Accuracy over all clients' test rows = example-weighted mean of per-client accuracy."""
    import torch

    model = build_model(test_x.shape[1], int(params["1.bias"].shape[0]), 0)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
    with torch.no_grad():
        pred = model(torch.from_numpy(np.ascontiguousarray(test_x))).argmax(1).numpy()
    return float((pred == test_y).mean())


def shuffle_order(n: int, seed: int, server_round: int, client: int):  # type: ignore[no-untyped-def]
    """The row order fedops uses for (run seed, round, client): same seeds, same permutation."""
    import torch

    s = int(np.random.SeedSequence([seed, server_round, client]).generate_state(2, np.uint64)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(s >> 1))


# --------------------------------------------------------------------------------------
# Flower side: a ServerApp with Flower's FedAvg, a ClientApp on Ray virtual clients
# --------------------------------------------------------------------------------------
_CLIENT_DATA: dict[str, dict[str, np.ndarray]] = {}  # per Ray worker process: data dir -> arrays


def _client_rows(data_dir: str, split: str, partition: int):  # type: ignore[no-untyped-def]
    """Partition ``partition``'s rows, memory-mapped once per Ray worker (like a cached dataset)."""
    import torch

    arrays = _CLIENT_DATA.get(data_dir)
    if arrays is None:
        arrays = {p.stem: np.load(p, mmap_mode="r") for p in Path(data_dir).glob("*.npy")}
        _CLIENT_DATA[data_dir] = arrays
    off = arrays[f"{split}_offsets"]
    a, b = int(off[partition]), int(off[partition + 1])
    x = torch.from_numpy(np.array(arrays[f"{split}_x"][a:b]))
    y = torch.from_numpy(np.array(arrays[f"{split}_y"][a:b]))
    return x, y


def flower_train(msg, context):  # type: ignore[no-untyped-def]
    """ClientApp train: load the global arrays, one local epoch of SGD, reply with arrays."""
    import torch
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from torch import nn

    cfg = msg.content["config"]
    partition = int(context.node_config["partition-id"])
    x, y = _client_rows(str(cfg["data-dir"]), "train", partition)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x.shape[1], int(cfg["num-classes"])))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=float(cfg["lr"]))
    loss_fn = nn.CrossEntropyLoss()
    batch = int(cfg["batch-size"])
    order = shuffle_order(len(x), int(cfg["seed"]), int(cfg["server-round"]), partition)
    total = 0.0
    for lo in range(0, len(x), batch):
        idx = order[lo : lo + batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": total / max(len(x), 1), "num-examples": len(x)}),
        }
    )
    return Message(content=content, reply_to=msg)


def flower_evaluate(msg, context):  # type: ignore[no-untyped-def]
    """ClientApp evaluate: accuracy and loss of the global model on this client's test rows."""
    import torch
    from flwr.app import Message, MetricRecord, RecordDict
    from torch import nn

    cfg = msg.content["config"]
    x, y = _client_rows(str(cfg["data-dir"]), "test", int(context.node_config["partition-id"]))
    model = nn.Sequential(nn.Flatten(), nn.Linear(x.shape[1], int(cfg["num-classes"])))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    with torch.no_grad():
        logits = model(x)
        loss = float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct = int((logits.argmax(1) == y).sum())
    n = max(len(y), 1)
    metrics = {"accuracy": correct / n, "loss": loss / n, "num-examples": len(y)}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


def flower_query(msg, context):  # type: ignore[no-untyped-def]
    """Warm-up: touch this worker's data cache and torch, reply with nothing."""
    from flwr.app import Message, RecordDict

    _client_rows(str(msg.content["config"]["data-dir"]), "train", 0)
    return Message(content=RecordDict(), reply_to=msg)


def make_client_app():  # type: ignore[no-untyped-def]
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.train()(flower_train)
    app.evaluate()(flower_evaluate)
    app.query()(flower_query)
    return app


def child_flower(spec: dict) -> dict:
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedops.data.synthetic import synthetic

    n, seed, rounds = spec["clients"], spec["seed"], spec["rounds"]
    t = time.perf_counter()
    data = synthetic(num_clients=n, alpha=1.0, beta=1.0, seed=seed)
    data_dir = Path(spec["work_dir"]) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("train_x", "train_y", "train_offsets", "test_x", "test_y", "test_offsets"):
        np.save(data_dir / f"{name}.npy", getattr(data, name))
    num_features, num_classes = data.num_features, data.num_classes
    del data  # the driver does not need the rows; every Ray worker maps them from disk
    data_s = time.perf_counter() - t

    config = ConfigRecord(
        {
            "data-dir": str(data_dir),
            "lr": spec["lr"],
            "batch-size": spec["batch"],
            "seed": seed,
            "num-classes": num_classes,
        }
    )
    initial = ArrayRecord(build_model(num_features, num_classes, seed).state_dict())
    marks: dict[str, float] = {}
    round_ends: list[float] = []
    out: dict = {}

    server_app = ServerApp()

    @server_app.main()
    def _main(grid, context) -> None:  # type: ignore[no-untyped-def]
        # Warm-up (start-up, not a round): wait for the Ray actor pool and let every actor
        # import torch and map the data once, through a few query messages.
        deadline = time.monotonic() + spec["timeout"]
        while len(node_ids := list(grid.get_node_ids())) < n and time.monotonic() < deadline:
            time.sleep(0.05)  # the SuperNodes register after the ServerApp thread starts
        k = min(len(node_ids), WARMUP_MESSAGES_PER_ACTOR * spec["flower_actors"])
        warm = [
            Message(RecordDict({"config": config}), dst_node_id=i, message_type=MessageType.QUERY)
            for i in node_ids[:k]
        ]
        replies = list(grid.send_and_receive(warm, timeout=spec["timeout"]))
        out["warmup_errors"] = sum(r.has_error() for r in replies)
        marks["warm"] = time.perf_counter()

        def evaluate_fn(server_round, arrays):  # type: ignore[no-untyped-def]
            round_ends.append(time.perf_counter())  # called before round 1 and after each round

        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0)
        result = strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=rounds,
            timeout=spec["timeout"],
            train_config=config,
            evaluate_config=config,
            evaluate_fn=evaluate_fn,
        )
        out["params"] = {k: v.numpy() for k, v in result.arrays.items()}
        out["reported_accuracy"] = {
            r: float(m["accuracy"]) for r, m in result.evaluate_metrics_clientapp.items()
        }

    backend_config = {
        "client_resources": {"num_cpus": spec["flower_client_cpus"], "num_gpus": 0.0},
        "init_args": {"num_cpus": spec["cpus"], "num_gpus": 0},
    }
    torch.set_num_threads(1)  # the driver only aggregates; leave the cores to the actors
    t_call = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=make_client_app(),
        num_supernodes=n,
        backend_name="ray",
        backend_config=backend_config,
    )
    t_end = time.perf_counter()
    if "params" not in out or len(round_ends) != rounds + 1:
        raise RuntimeError(f"Flower finished {max(len(round_ends) - 1, 0)} of {rounds} rounds")

    return {
        "data_s": data_s,
        "startup_s": marks["warm"] - t_call,
        "rounds_s": list(np.diff(round_ends)),
        "teardown_s": t_end - round_ends[-1],
        "params": {k: v.tolist() for k, v in out["params"].items()},
        "reported_accuracy": out["reported_accuracy"],
        "warmup_errors": out["warmup_errors"],
    }


# --------------------------------------------------------------------------------------
# fedops side: the real simulate path, vectorized backend
# --------------------------------------------------------------------------------------
def child_fedops(spec: dict) -> dict:
    import torch

    from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
    from fedops.runtime.store import RunStore, read_checkpoint
    from fedops.simulation import engine

    if spec["fedops_threads"]:
        torch.set_num_threads(spec["fedops_threads"])
    n, seed, rounds = spec["clients"], spec["seed"], spec["rounds"]

    # Time rounds from commit to commit (the checkpoint and metrics writes included).
    commits: dict[int, float] = {}
    real_save = RunStore.save_round

    def save_round(self, server_round, *args, **kwargs):  # type: ignore[no-untyped-def]
        digest = real_save(self, server_round, *args, **kwargs)
        commits[server_round] = time.perf_counter()
        return digest

    RunStore.save_round = save_round  # type: ignore[method-assign]
    # fedops generates the data itself, as `fedops simulate dataset=synthetic` does (the
    # dataset group's defaults are Synthetic(1, 1) with the generator's own defaults); the
    # wrapper only times it, so that start-up can be reported without data generation.
    real_load, timing = engine.load_federation, {}

    def timed_load(cfg):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        loaded = real_load(cfg)
        timing["data_s"] = time.perf_counter() - t
        return loaded

    engine.load_federation = timed_load

    cfg = SimulateConfig(rounds=rounds, seed=seed, simulation=SimulationConfig(num_clients=n))
    cfg.dataset.name = "synthetic"
    cfg.client.epochs, cfg.client.batch_size, cfg.client.lr = 1, spec["batch"], spec["lr"]
    run_dir = Path(spec["work_dir"]) / "run"
    t_call = time.perf_counter()
    engine.run_simulation(validate(cfg), run_dir)
    t_end = time.perf_counter()

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    params = read_checkpoint(run_dir / "checkpoints" / f"round-{rounds:05d}.safetensors")
    return {
        "data_s": timing["data_s"],
        "startup_s": commits[0] - t_call - timing["data_s"],
        "rounds_s": [commits[r] - commits[r - 1] for r in range(1, rounds + 1)],
        "teardown_s": t_end - commits[rounds],
        "params": {k: v.tolist() for k, v in params.items()},
        "reported_accuracy": {i + 1: m["eval_accuracy"] for i, m in enumerate(metrics)},
        "torch_threads": torch.get_num_threads(),
    }


def child_main(argv: list[str]) -> int:
    framework, spec_path = argv
    spec = json.loads(Path(spec_path).read_text())
    result = (child_fedops if framework == "fedops" else child_flower)(spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------
# Parent: run each framework in its own subprocess, sample its process tree's memory
# --------------------------------------------------------------------------------------
def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # comm may hold spaces and parens
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _proc_kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _session_members(sid: int) -> list[int]:
    """Live processes of the session ``sid`` (one this script created with setsid)."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # state ppid pgrp session ...
                members.append(int(entry.name))
    return members


class TreeMemory(threading.Thread):
    """Peak of the summed RSS (and PSS) over a process and all its descendants.

    RSS counts pages shared between processes (Ray's object store in /dev/shm, the
    memory-mapped data, shared libraries) once per process; PSS splits them.
    """

    def __init__(self, root: int, interval: float = 0.1, pss_every: int = 5) -> None:
        super().__init__(daemon=True)
        self.root, self.interval, self.pss_every = root, interval, pss_every
        self.peak_rss_kb = self.peak_pss_kb = self.max_procs = 0
        self._stop_event = threading.Event()
        try:
            import psutil  # noqa: F401

            self.source = "psutil"
        except ImportError:
            self.source = "/proc"

    def tree(self) -> list[int]:
        if self.source == "psutil":
            import psutil

            try:
                root = psutil.Process(self.root)
                return [self.root] + [p.pid for p in root.children(recursive=True)]
            except psutil.Error:
                return []
        children, out, todo = _proc_children(), [], [self.root]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, ()))
        return out

    def run(self) -> None:
        i = 0
        while not self._stop_event.is_set():
            pids = self.tree()
            self.max_procs = max(self.max_procs, len(pids))
            rss = sum(_proc_kb(f"/proc/{p}/status", "VmRSS:") for p in pids)
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            if i % self.pss_every == 0:
                pss = sum(_proc_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
                self.peak_pss_kb = max(self.peak_pss_kb, pss)
            i += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_child(framework: str, spec: dict, timeout: float, work: Path) -> dict:
    """Run one framework at one size in a subprocess; never raises for a failed run."""
    work.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "work_dir": str(work), "result": str(work / "result.json")}
    (work / "spec.json").write_text(json.dumps(spec))
    env = {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",  # no network: Flower would post usage events
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    code = "import sys, vs_flower; sys.exit(vs_flower.child_main(sys.argv[1:]))"
    log_path = work / "log.txt"
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, framework, str(work / "spec.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=HERE,
            start_new_session=True,
        )
        mem = TreeMemory(proc.pid)
        mem.start()
        status = "ok"
        try:
            rc = proc.wait(timeout=timeout)
            if rc != 0:
                status = f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
        mem.stop()
        # Whatever is left of this run (Ray's processes included) is in the session and
        # process group this child leads: end exactly those, never anything by name.
        for pid in _session_members(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    wall = time.perf_counter() - t0
    result = {
        "status": status,
        "wall_s": wall,
        "peak_rss_mb": mem.peak_rss_kb / 1024,
        "peak_pss_mb": mem.peak_pss_kb / 1024,
        "max_procs": mem.max_procs,
        "mem_source": mem.source,
        "load_avg": (load0, os.getloadavg()[0]),
    }
    if status == "ok":
        result.update(json.loads((work / "result.json").read_text()))
        # Scored here, after the child has exited: neither framework's peak memory
        # includes the test rows this script needs for the check.
        params = {k: np.asarray(v, dtype=np.float32) for k, v in result.pop("params").items()}
        result["accuracy"] = global_accuracy(params, *test_rows(spec["clients"], spec["seed"]))
    else:
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        result["log_tail"] = tail
    return result


def steady_round(rounds_s: list[float]) -> float:
    """Median round time after the first (which pays lazy one-time costs), if there is one."""
    return statistics.median(rounds_s[1:] if len(rounds_s) > 1 else rounds_s)


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _variants(args: argparse.Namespace, torch_threads: int) -> list[tuple[str, str, dict]]:
    """(framework, label, spec overrides) for every configuration to run at every size."""
    out = []
    if "fedops" in args.frameworks:
        for t in args.fedops_threads:
            label = f"fedops, torch threads {t or torch_threads}{'' if t else ' (default)'}"
            out.append(("fedops", label, {"fedops_threads": t}))
    if "flower" in args.frameworks:
        for c in args.flower_client_cpus:
            actors = int(args.cpus / c)
            out.append(
                (
                    "flower",
                    f"Flower, num_cpus {c:g}/client ({actors} actors)",
                    {"flower_client_cpus": c, "flower_actors": actors},
                )
            )
    return out


def _print_run(r: dict) -> None:
    if r["status"] != "ok":
        print(f"  {r['label']} {r['status']}; last log lines:", flush=True)
        for line in r["log_tail"]:
            print(f"    {line}")
        return
    print(
        f"  startup {r['startup_s']:.1f} s, rounds "
        + ", ".join(f"{s:.2f}" for s in r["rounds_s"])
        + f" s, teardown {r['teardown_s']:.1f} s, data {r['data_s']:.1f} s, "
        f"wall {r['wall_s']:.1f} s; peak RSS {r['peak_rss_mb']:.0f} MB "
        f"(PSS {r['peak_pss_mb']:.0f} MB, up to {r['max_procs']} processes); "
        f"accuracy {r['accuracy']:.4f} (framework's own per round: "
        + ", ".join(f"{v:.4f}" for v in r["reported_accuracy"].values())
        + f"); 1-min load average {r['load_avg'][0]:.1f} -> {r['load_avg'][1]:.1f}",
        flush=True,
    )
    if r.get("warmup_errors"):
        print(f"  ({r['warmup_errors']} warm-up queries failed)", flush=True)


def _accuracy_gap(f: dict, o: dict) -> str:
    if f["rounds"] == o["rounds"]:
        return f"{100 * (f['accuracy'] - o['accuracy']):+.2f}"
    # Fewer Flower rounds: compare both frameworks' own (same-metric) accuracy at that round.
    fl = f["reported_accuracy"][str(f["rounds"])]
    fo = o["reported_accuracy"][str(f["rounds"])]
    return f"{100 * (fl - fo):+.2f} (after round {f['rounds']})"


def print_tables(rows: list[dict], clients: list[int]) -> None:
    print(
        "\n| clients | framework | rounds | startup s | round 1 s | s/round | peak RSS MB "
        "| peak PSS MB | final accuracy |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ok = r["status"] == "ok"
        r["s_per_round"] = steady_round(r["rounds_s"]) if ok else None
        status = "" if ok else f" **{r['status']}**"
        print(
            f"| {r['clients']} | {r['label']}{status} | {r['rounds']} "
            f"| {_fmt(r.get('startup_s'), '.1f')} "
            f"| {_fmt(r['rounds_s'][0] if ok else None, '.2f')} "
            f"| {_fmt(r['s_per_round'], '.3f')} "
            f"| {r['peak_rss_mb']:.0f} | {r['peak_pss_mb']:.0f} "
            f"| {_fmt(r.get('accuracy'), '.4f')} |"
        )
    print(
        "\n| clients | Flower | fedops | Flower s/round / fedops s/round "
        "| Flower RSS / fedops RSS | Flower PSS / fedops PSS | accuracy Flower - fedops (points) |"
    )
    print("|---:|---|---|---:|---:|---:|---:|")
    for n in clients:
        flowers = [r for r in rows if r["clients"] == n and r["framework"] == "flower"]
        fedopses = [r for r in rows if r["clients"] == n and r["framework"] == "fedops"]
        for f in flowers:
            for o in fedopses:
                if f["status"] != "ok" or o["status"] != "ok":
                    why = f["status"] if f["status"] != "ok" else "fedops " + o["status"]
                    print(f"| {n} | {f['label']} | {o['label']} | - ({why}) | - | - | - |")
                    continue
                print(
                    f"| {n} | {f['label']} | {o['label']} "
                    f"| {f['s_per_round'] / o['s_per_round']:.1f}x "
                    f"| {f['peak_rss_mb'] / o['peak_rss_mb']:.1f}x "
                    f"| {f['peak_pss_mb'] / o['peak_pss_mb']:.1f}x | {_accuracy_gap(f, o)} |"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--flower-rounds",
        type=int,
        nargs="+",
        default=None,
        help="Flower's rounds per size (one value, or one per --clients); default --rounds",
    )
    parser.add_argument("--timeout", type=float, default=1200.0, help="s per run (one size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray's num_cpus")
    parser.add_argument(
        "--flower-client-cpus",
        type=float,
        nargs="+",
        default=[1.0, 0.5],
        help="Ray num_cpus per virtual client, one Flower run each (actors = cpus / this)",
    )
    parser.add_argument(
        "--fedops-threads",
        type=int,
        nargs="+",
        default=[0, 1],
        help="torch threads in the fedops process, one fedops run each (0: torch's default)",
    )
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    args = parser.parse_args(argv)
    flower_rounds = args.flower_rounds or [args.rounds]
    if len(flower_rounds) == 1:
        flower_rounds = flower_rounds * len(args.clients)
    if len(flower_rounds) != len(args.clients):
        parser.error("--flower-rounds takes one value or one per --clients")

    import flwr
    import ray
    import torch

    print(
        f"Synthetic(1,1), logistic regression 60->10, 1 local epoch, batch 10, lr 0.01 SGD, "
        f"all clients train and evaluate every round, FedAvg by examples.\n"
        f"fedops (vectorized backend) vs flwr {flwr.__version__} run_simulation on Ray "
        f"{ray.__version__} (ray.init num_cpus={args.cpus}); torch {torch.__version__}; "
        f"{os.cpu_count()} CPUs here; load average {os.getloadavg()[0]:.2f} at start.",
        flush=True,
    )
    variants = _variants(args, torch.get_num_threads())
    rows = []
    with tempfile.TemporaryDirectory(prefix="vs_flower_") as tmp:
        for n, f_rounds in zip(args.clients, flower_rounds, strict=True):
            for k, (framework, label, overrides) in enumerate(variants):
                rounds = f_rounds if framework == "flower" else args.rounds
                spec = {
                    "clients": n,
                    "rounds": rounds,
                    "seed": args.seed,
                    "lr": 0.01,
                    "batch": 10,
                    "timeout": args.timeout,
                    "cpus": args.cpus,
                    **overrides,
                }
                print(f"\n[{n} clients] {label}, {rounds} rounds ...", flush=True)
                r = run_child(framework, spec, args.timeout, Path(tmp) / f"{n}-{k}-{framework}")
                r.update(clients=n, framework=framework, label=label, rounds=rounds)
                _print_run(r)
                rows.append(r)
    print_tables(rows, args.clients)
    return 0


if __name__ == "__main__":
    sys.exit(main())
