"""``mvjax experiment rope-cause-seeds``: claim (5) of rope-cause decided with training seeds as
units. ``cli`` (its flag, the registry entry), ``run`` (read the seed runs, decide, write), ``results``
(what it reads of each run, typed),
``claims`` (the rule fixed before the runs) and ``report`` (report.md, null.png). Its own package,
not a module of ``rope_cause``: it is its own subcommand with its own rule and outputs, and reads
rope-cause only through its typed results (``rope_cause.results``) and arms (``rope_cause.presets``)."""
