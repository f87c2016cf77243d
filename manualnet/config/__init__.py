"""Configs: the schema (``schema``), reading YAML with ``--set`` overrides and validating it (``load``),
checking the components it names (``check``), user plugin files (``plugins``) and building what a run needs
from it (``model``: the model and the loss; ``setup``: data, optimizer, schedule, device)."""
