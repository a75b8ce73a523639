"""What every benchmark here measures with: one definition of a percentile."""
from __future__ import annotations


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at ``fraction`` of the sorted samples (nearest rank; 0.99 = p99)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _cpu_from_stat(stat_line: str) -> float:
    """User + system CPU seconds from a /proc/<pid>/stat line (the command name may hold spaces)."""
    import os

    fields = stat_line.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far; 0.0 once it is gone (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return _cpu_from_stat(stat.read())
    except OSError:
        return 0.0


def _process_cpu() -> dict[int, tuple[str, float]]:
    """Every live process: its command line and the user + system CPU seconds it has used (Linux /proc)."""
    import os

    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                seconds = _cpu_from_stat(stat.read())
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[int(entry)] = (command, seconds)
    return found


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent not idle (all cores, /proc/stat)."""
    import os

    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)    # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuLedger:
    """CPU seconds spent during a phase, per group of processes and for the whole machine.

    ``groups`` maps a label to a predicate on (pid, command line); a process counts for the first
    group it matches. Wall-clock rates depend on what else runs; CPU per call does not, and at
    saturation the throughput of two kinds of call is in the inverse ratio of their CPU per call."""

    def __init__(self, groups):
        self.groups = groups

    def start(self):
        self._before, self._busy_before = _process_cpu(), _machine_busy()

    def stop(self) -> dict[str, float]:
        after, busy = _process_cpu(), _machine_busy()
        spent = {label: 0.0 for label in self.groups}
        for pid, (command, seconds) in after.items():
            for label, matches in self.groups.items():
                if matches(pid, command):
                    before = self._before.get(pid)
                    spent[label] += seconds - (before[1] if before and before[0] == command else 0.0)
                    break
        spent["whole machine"] = busy - self._busy_before
        return spent
