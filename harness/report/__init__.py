"""Report: the run folder's format (`results`), its summaries and report (`finalize`, `tables`,
`run_report`), comparisons between runs (`compare`) and merging shards (`merge`)."""
