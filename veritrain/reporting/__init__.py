"""Run files (JSON, JSON lines, CSV), terminal tables and training-curve plots."""

from veritrain.reporting.io import (
    append_jsonl,
    atomic_write_bytes,
    read_json,
    read_jsonl,
    write_csv,
    write_json,
    write_jsonl,
)
from veritrain.reporting.plots import metrics_plot_data, plot_metrics
from veritrain.reporting.runs import holdout_lines, run_holdout_lines, run_row, runs_table
from veritrain.reporting.tables import format_markdown, format_table

__all__ = [
    "append_jsonl",
    "atomic_write_bytes",
    "read_json",
    "read_jsonl",
    "write_csv",
    "write_json",
    "write_jsonl",
    "metrics_plot_data",
    "plot_metrics",
    "format_markdown",
    "format_table",
    "holdout_lines",
    "run_holdout_lines",
    "run_row",
    "runs_table",
]
