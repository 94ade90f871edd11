"""``mvjax experiment disrupt``: disrupt the massive Q/K dims (and the controls) on the task set.
``cli`` (flags → ``DisruptConfig``, the registry entry), ``run`` (the engine), ``claims`` and
``report`` (the default presets), ``confound_claims`` and ``confound_report`` (the confounds
preset); its typed records are ``analysis.records``, shared with quantize."""
