"""Training: the loop (``trainer``), checkpoints and resume (``checkpoint``), run directories (``run_dir``),
data-parallel ranks (``distributed``), divergence diagnosis, thread choice, evaluation, and ``api.train``,
the Python entry point."""
