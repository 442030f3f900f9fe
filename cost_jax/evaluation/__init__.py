"""Benchmark metrics (pytracking, OSTrack and VL-SOT500 protocols), result files, attribute tables, plots."""

from cost_jax.evaluation.benchmark import evaluate, score_trackers, tracker_metrics
from cost_jax.evaluation.results_io import (SequenceFailure, read_rows, result_path, time_path,
                                            write_results, write_times)
