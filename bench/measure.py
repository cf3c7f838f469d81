"""What the kernel says about processes: CPU time of a process tree, memory, load.

Everything is read from /proc, so a measurement costs the measured processes
nothing. CPU times are in clock ticks (usually 10 ms); a tree's time includes
children it has already reaped (cutime/cstime), so a child that exits during a
run is not lost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and ')': split after the last ')'.
    return text[text.rindex(")") + 2:].split()


def parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    result = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                result[int(entry.name)] = int(fields[1])
    return result


def tree(root: int, parent_of: dict[int, int] | None = None) -> list[int]:
    """``root`` and all its descendants."""
    parent_of = parents() if parent_of is None else parent_of
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_of.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def children_of(root: int) -> list[int]:
    return sorted(pid for pid, ppid in parents().items() if ppid == root)


def cpu_ticks(pids: list[int]) -> int:
    """utime+stime+cutime+cstime summed over ``pids``."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(value) for value in fields[11:15])
    return total


def tree_cpu_seconds(root: int) -> float:
    return cpu_ticks(tree(root)) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time all processes spent in user and system mode, all cores together."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    user, nice, system = (int(value) for value in fields[1:4])
    return (user + nice + system) / CLOCK_TICKS


@dataclass(frozen=True)
class Memory:
    """Of one process, in KiB: resident, proportional and unique (private) memory."""

    rss: int
    pss: int
    uss: int

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.rss + other.rss, self.pss + other.pss, self.uss + other.uss)


def memory(pid: int) -> Memory:
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                values[name] = int(parts[0])
    return Memory(values["Rss"], values["Pss"],
                  values["Private_Clean"] + values["Private_Dirty"])


def status_kib(pid: int, name: str) -> int:
    """A ``VmXXX`` line of /proc/PID/status, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


def reset_peak_rss(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


class LoadWatch:
    """How much CPU processes outside ``own_root``'s tree used between start and stop."""

    def __init__(self, own_root: int):
        self.own_root = own_root
        self._start: tuple[float, float, float] | None = None

    def _sample(self) -> tuple[float, float, float]:
        return (os.times().elapsed, machine_busy_seconds(), tree_cpu_seconds(self.own_root))

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> float:
        """Foreign CPU, in cores (0.5: another process used half a core on average)."""
        wall0, busy0, own0 = self._start
        wall1, busy1, own1 = self._sample()
        if wall1 <= wall0:
            return 0.0
        return max((busy1 - busy0) - (own1 - own0), 0.0) / (wall1 - wall0)


def machine_description() -> dict:
    """What the numbers were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    uname = os.uname()
    with open("/proc/meminfo") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": f"{uname.sysname} {uname.release}", "machine": uname.machine}
