"""Benchmarks that print ratios of our code against its plain-PyTorch equivalent.

Performance claims live here, not in timed tests: `esper bench` runs the
suites in `esper.bench.runner.SUITES`, prints a table and writes
`benchmarks/results.json` with a description of the machine.
"""

from esper.bench.machine import describe_machine
from esper.bench.runner import SUITES, Suite, print_table, run_benchmarks, suite_names, write_results
from esper.bench.timing import BenchError, BenchSettings, PairTiming, TimingPlan, summarise, time_pair

__all__ = [
    "SUITES",
    "BenchError",
    "BenchSettings",
    "PairTiming",
    "Suite",
    "TimingPlan",
    "describe_machine",
    "print_table",
    "run_benchmarks",
    "suite_names",
    "summarise",
    "time_pair",
    "write_results",
]
