"""``mvjax experiment rope-cause``: matched models trained from scratch that differ only in their
positional scheme, watched for massive values over training. ``cli`` (flags → ``Preset``, the
registry entry), ``presets`` (arms and scales), ``run`` (the engine: train, analyze, score),
``measure`` (a run directory → the typed ``results``), ``claims`` (the paper's claims, fixed
rules), ``report`` (report.md) and ``plots`` (figures)."""
