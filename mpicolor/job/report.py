"""What a run did: how each tarball ended, what each rank computed, the summary and ``run-summary.json``."""

import resource
import time
from dataclasses import dataclass

from mpicolor.job.exits import EXIT_INPUT_FAILED, EXIT_OK, EXIT_RANK_LOST
from mpicolor.job.progress import format_duration
from mpicolor.job.protocol import RankStats
from mpicolor.state.results import INCOMPLETE, UNREADABLE


@dataclass
class TarballOutcome:
    """How a tarball ended in this run, for the summary.

    ``frames`` and ``failures`` are None for a tarball already done before this run (its sqlite file exists
    and is not read again).
    """

    name: str
    status: str
    frames: int | None
    failures: int | None
    reason: str | None


class RunReport:
    """The numbers of a run as rank 0 gathers them.

    Attributes
    ----------
    outcomes : dict of int to TarballOutcome
        By the tarball's number in the run.
    rank_stats : dict of int to RankStats
    lost_ranks : dict of int to str
        Ranks given up on, and why.
    """

    def __init__(self):
        self.outcomes = {}
        self.rank_stats = {}
        self.lost_ranks = {}
        self.cpu_started = time.process_time()

    def chunk_done(self, result):
        """Count what each rank did for a :class:`~mpicolor.job.protocol.ChunkResult`."""
        for rank, stats in result.stats.items():
            self.rank_stats.setdefault(rank, RankStats()).add(stats)

    def exit_status(self):
        """5 when a rank was lost, 1 when a tarball could not be read (in part), else 0."""
        if self.lost_ranks:
            return EXIT_RANK_LOST
        failed = any(outcome.status in (UNREADABLE, INCOMPLETE) for outcome in self.outcomes.values())
        return EXIT_INPUT_FAILED if failed else EXIT_OK

    def lines(self, wall, placements=()):
        """Lines of the end-of-run summary."""
        computed = sum(stats.frames for stats in self.rank_stats.values())
        failed = sum(outcome.failures or 0 for outcome in self.outcomes.values())
        lines = [f"done: {len(self.outcomes)} data sets, {computed} frames computed in this run "
                 f"({failed} failed frames in the data sets read), wall {format_duration(wall)}, "
                 f"{computed / wall if wall > 0 else 0:.1f} frames/s"]
        for number in sorted(self.outcomes):
            outcome = self.outcomes[number]
            text = f"  {outcome.name}: {outcome.status}"
            if outcome.frames is not None:
                text += f", {outcome.frames} frames, {outcome.failures} failed"
            lines.append(text + (f" ({outcome.reason})" if outcome.reason else ""))
        for rank in sorted(self.rank_stats):
            stats = self.rank_stats[rank]
            rate = stats.frames / stats.busy if stats.busy > 0 else 0.0
            backends = ", ".join(f"{name} {count}" for name, count in sorted(stats.backends.items()))
            lines.append(f"  rank {rank}: {stats.frames} frames, {rate:.1f} frames/s while busy, "
                         f"busy {100 * stats.busy / wall if wall > 0 else 0:.0f}% ({backends})")
        for rank, why in sorted(self.lost_ranks.items()):
            lines.append(f"  rank {rank} was lost: {why}; others computed its frames")
        fallbacks = [p for p in placements if p.fallback is not None]
        if fallbacks:
            lines.append(f"  {len(fallbacks)} GPU ranks computed on the CPU: {fallbacks[0].fallback}")
        return lines

    def document(self, wall, settings, saves, work=None, node_cpu=None):
        """The run's numbers for scripts and benchmarks (``run-summary.json``).

        Wall seconds from rank 0's start-up to the end (MPI and Python start-up aside); ``work``, the wall and
        rank 0's processor seconds from the first chunk handed out to the last result (None when nothing was
        computed); per rank frames, busy seconds, backends; rank 0's peak memory and bytes written; ``saves``,
        the writer's :meth:`~mpicolor.state.writer.SaveTimes.document`; ``node_cpu``, each node coordinator's
        processor seconds.
        """
        frames = sum(stats.frames for stats in self.rank_stats.values())
        # what coordinating costs rank 0 in processor time; known when it computed no frame itself (runs of
        # more than 16 ranks): on a shared node its wall time also counts the time others held the core
        coordinating = None if 0 in self.rank_stats else time.process_time() - self.cpu_started
        return {
            "wall": wall, "frames": frames, "coordinator_cpu_s": coordinating,
            "work_wall": work and work[0], "work_coordinator_cpu_s": work and work[1],
            "node_coordinators_cpu_s": {str(rank): cpu for rank, cpu in sorted((node_cpu or {}).items())},
            "coordinator_frames_per_cpu_s": frames / coordinating if coordinating else None,
            "ranks": {str(rank): {"frames": stats.frames, "busy": stats.busy, "backends": stats.backends}
                      for rank, stats in sorted(self.rank_stats.items())},
            "tarballs": [vars(self.outcomes[number]) for number in sorted(self.outcomes)],
            "lost_ranks": {str(rank): why for rank, why in sorted(self.lost_ranks.items())},
            "settings": settings,
            "rank0": {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      **_bytes_written()},
            "checkpoint_saves": saves,
        }


def _bytes_written():
    """What this process wrote: ``write_bytes`` to storage and ``wchar`` through write calls (Linux's
    /proc/self/io; empty where it does not exist)."""
    try:
        with open("/proc/self/io") as stream:
            counters = dict(line.split(": ") for line in stream.read().splitlines())
    except OSError:
        return {}
    return {"write_bytes": int(counters["write_bytes"]), "wchar": int(counters["wchar"])}
