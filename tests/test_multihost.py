"""A real multi-host run: mpiexec starts ranks over ssh on three hosts (network namespaces of this machine,
see netns.py), the node tier engages, and the outputs equal a single-host run's."""

import json
import os
import subprocess
import sys

import pytest

import netns
from helpers import bundled_frames, job_environment, outputs, rank_pid, run_mpicolor
from mpicolor.bench import run as bench_run

HOSTS, SLOTS = 3, 2
RANKS = HOSTS * SLOTS

pytestmark = [pytest.mark.mpi, pytest.mark.skipif(netns.missing() is not None, reason=str(netns.missing()))]


@pytest.fixture
def hosts(request, tmp_path_factory):
    """Three test hosts with sshd, removed again after the test whatever happened."""
    virtual_hosts = netns.VirtualHosts(tmp_path_factory.mktemp("hosts"), count=HOSTS)
    request.addfinalizer(virtual_hosts.close)
    try:
        virtual_hosts.start()
    except netns.Unavailable as why:
        pytest.skip(str(why))
    return virtual_hosts


def host_marker(folder):
    """A wrapper that records the network namespace, that is the test host, of every rank's process, then runs it.

    Hostnames are shared by network namespaces, so ``ip netns identify`` is what tells the hosts apart; the rank
    of each pid comes from `helpers.job_environment`.
    """
    path = os.path.join(folder, "mark-host")
    with open(path, "w") as script:
        script.write(f'#!/bin/sh\n{netns.tool("ip")} netns identify $$ > "{folder}/host-$$"\nexec "$@"\n')
    os.chmod(path, 0o755)
    return path


def test_ranks_on_three_hosts_give_the_single_host_results(hosts, input_dir, tmp_path):
    # one rank first: it also fills numba's cache, so the six ranks below do not all compile at once
    single = run_mpicolor(1, "run", input_dir, tmp_path / "single", timeout=120)
    assert single.returncode == 0, single.stderr

    markers = tmp_path / "markers"
    environment = job_environment(markers)
    options = hosts.launch_options(tmp_path / "hostfile", SLOTS, bench_run.is_open_mpi(bench_run.mpiexec_path()))
    command = [*bench_run.mpiexec_command(), *options, "-n", str(RANKS), host_marker(markers), sys.executable,
               "-m", "mpicolor", "run", str(input_dir), str(tmp_path / "multi")]
    multi = subprocess.run(command, capture_output=True, text=True, timeout=90, env=environment)
    assert multi.returncode == 0, multi.stderr

    placed = {rank: (markers / f"host-{rank_pid(markers, rank, timeout=0)}").read_text().strip()
              for rank in range(RANKS)}
    # both MPIs fill each host's slots in hostfile order
    assert placed == {rank: hosts.namespaces[rank // SLOTS] for rank in range(RANKS)}

    # three hosts: the node tier, with a node coordinator per host (rank 1 on rank 0's) and rank 0 computing nothing
    assert f"{RANKS} ranks on {HOSTS} nodes: rank 0 hands ranges to the node coordinators (ranks 1, 2, 4)" in multi.stderr
    with open(tmp_path / "multi" / "run-summary.json") as summary_file:
        summary = json.load(summary_file)
    assert "0" not in summary["ranks"] and set(summary["ranks"]) <= {str(rank) for rank in range(1, RANKS)}
    assert sorted(summary["node_coordinators_cpu_s"], key=int) == ["1", "2", "4"]
    frames_by_host = {namespace: 0 for namespace in hosts.namespaces}
    for rank, numbers in summary["ranks"].items():
        frames_by_host[placed[int(rank)]] += numbers["frames"]
    assert all(frames_by_host.values()), f"a host computed no frame: {frames_by_host}"
    assert sum(frames_by_host.values()) == summary["frames"] == len(bundled_frames())

    assert outputs(tmp_path / "multi") == outputs(tmp_path / "single")
