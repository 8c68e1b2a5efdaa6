"""Peak memory of a framework run's whole process tree, sampled from /proc."""

from __future__ import annotations

import os

from harness import Ticker, proc_kb, proc_stat_fields


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = proc_stat_fields(entry.name)
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))  # state ppid ...
    return children


class TreeMemory:
    """Peak of the summed RSS (and PSS) over a process and all its descendants.

    RSS counts pages shared between processes (Ray's object store in /dev/shm, the
    memory-mapped data, shared libraries) once per process; PSS splits them.
    """

    def __init__(self, root: int, interval: float = 0.1, pss_every: int = 5) -> None:
        self.root, self.pss_every = root, pss_every
        self.peak_rss_kb = self.peak_pss_kb = self.max_procs = 0
        self._samples = 0
        self._ticker = Ticker(interval, self._sample)
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

    def _sample(self) -> None:
        pids = self.tree()
        self.max_procs = max(self.max_procs, len(pids))
        rss = sum(proc_kb(f"/proc/{p}/status", "VmRSS:") or 0 for p in pids)
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        if self._samples % self.pss_every == 0:
            pss = sum(proc_kb(f"/proc/{p}/smaps_rollup", "Pss:") or 0 for p in pids)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self._samples += 1

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()
