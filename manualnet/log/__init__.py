"""What a run shows and records: metrics.jsonl and TensorBoard (``logger``, ``event_file``), histograms and
update ratios (``telemetry``), progress bars and summaries (``progress``)."""
