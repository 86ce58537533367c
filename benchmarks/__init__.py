"""Benchmark scripts (run as `python benchmarks/NAME.py`): a table, then one JSON object on the last line, kept as a
result file by `benchmarks.results.emit`. A package so the scripts import that helper by one name."""
