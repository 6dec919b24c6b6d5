"""Facts about the CPU this process runs on: the cores it may use, how many of them other
work keeps busy right now, native bf16. Standard library only (no torch).

Why the thread count matters: llama.cpp's worker threads spin-wait for each other at every
step, so a model given more threads than there are free cores stalls whenever one of them
is descheduled (on a 2-core laptop with one other busy process: 0.3 tok/s with 2 threads,
7 tok/s with 1, docs/benchmarks.md). `compute_threads` gives it the cores that are free.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16, AMX, or Arm BF16): bf16 is
    then 1.4–2× faster than float32 and half the memory; elsewhere it is emulated, slower."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_amx() -> bool:
    """Whether the CPU reports Intel AMX (matrix tiles). On the 2-core VMs this project
    runs on, llama.cpp's AMX kernels died with SIGILL ("Illegal instruction") in the test
    suite, where the same code ran alone; the guest may not get the tile state it is
    told it has (llama.cpp issue #28328 describes that XCR0 gap)."""
    return "amx_tile" in _cpu_flags()


def _cpu_flags() -> set[str]:
    """The words of /proc/cpuinfo (its feature flags among them); empty off Linux."""
    if not sys.platform.startswith("linux"):
        return set()
    try:
        return set(Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").split())
    except OSError:
        return set()


def usable_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity mask, e.g. under taskset or a
    container's cpuset)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Physical cores among the usable CPUs (hyper-threads of one core count once): more
    compute threads than this only contend for the same units."""
    cpus = usable_cpus()
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return len(cores) or len(cpus)


def _busy_jiffies(cpus: list[int]) -> tuple[int, int] | None:
    """(busy, total) CPU time so far of the logical CPUs `cpus`, in clock ticks, from
    /proc/stat (only ours: work pinned to other CPUs does not take our cores)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{n}" for n in cpus}
    busy = total = 0
    found = False
    for line in lines:
        fields = line.split()
        if not fields or fields[0] not in wanted:
            continue
        values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
        busy += sum(values) - values[3] - values[4]
        total += sum(values)
        found = True
    return (busy, total) if found else None


def busy_elsewhere(sample_s: float = 0.05) -> float:
    """How many of our CPUs other processes keep busy now: their busy time over a short
    sample, minus this process's own, in CPUs (0.0 on an idle machine, ~1.0 with one
    CPU-bound job running). Falls back to the 1-minute load average where /proc is absent."""
    cpus = usable_cpus()
    before = _busy_jiffies(cpus)
    own_before = sum(os.times()[:2])
    started = time.perf_counter()
    if before is None:
        try:
            return float(os.getloadavg()[0])
        except OSError:
            return 0.0
    time.sleep(sample_s)
    after = _busy_jiffies(cpus)
    elapsed = time.perf_counter() - started
    own = sum(os.times()[:2]) - own_before
    if after is None or elapsed <= 0:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = (after[0] - before[0]) / tick - own
    return max(0.0, busy / elapsed)


def compute_threads(requested: int = 0, busy: float | None = None) -> int:
    """Threads for a compute library (llama.cpp, torch): `requested` when > 0, else the
    physical cores not kept busy by other processes (at least 1). `busy` is
    busy_elsewhere() unless given."""
    if requested > 0:
        return requested
    cores = min(physical_cores(), len(usable_cpus()))
    if busy is None:
        busy = busy_elsewhere()
    # A job at 0.6 of a core still preempts a spinning thread often: count it as a core.
    return max(1, cores - int(busy + 0.5))
