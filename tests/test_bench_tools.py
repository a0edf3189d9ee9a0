"""`mpicolor bench tools`: the synthetic collection, one run, and every tool timed alone with its rows counted."""

import argparse
import json
import os

import pytest

from mpicolor.bench import tools as bench_tools


def run(argv):
    parser = argparse.ArgumentParser()
    bench_tools.add_tools_arguments(parser)
    return bench_tools.run_tools_bench(parser.parse_args([str(arg) for arg in argv]))


@pytest.mark.mpi
def test_every_tool_is_timed_and_its_rows_checked(tmp_path, capsys):
    report = tmp_path / "tools.json"
    assert run(["--out", tmp_path / "bench", "--tarballs", 2, "--members", 150, "--ranks", 2, "--repeat", 1,
                "--tools", "inspect,render-average,export-csv,export-parquet", "--json", report]) == 0
    printed = capsys.readouterr().out
    for command in ("mpicolor inspect", "mpicolor render --width 2000 --mode average",
                    "mpicolor export --format csv", "mpicolor export --format parquet"):
        assert command in printed
    assert "rows checked against the frames: yes" in printed and "(set for 11,117,500 frames" in printed
    tools = {row["tool"]: row for row in json.loads(report.read_text())["tools"]}
    assert tools["export-csv"]["rows"] == tools["export-parquet"]["rows"] == 300
    assert all(row["peak_mib"] > 10 and row["wall_s"] > 0 and row["status"] == [0] for row in tools.values())
    assert os.path.exists(tmp_path / "bench" / "files" / "average.png")


def test_bad_options_are_named(tmp_path, capsys):
    assert run(["--out", tmp_path, "--tools", "inspect,paint", "--repeat", 0]) == 2
    assert "tool 'paint' should be one of" in capsys.readouterr().err
