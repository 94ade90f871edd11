"""``mvjax experiment emergence``: when do massive values appear during training? ``cli`` (flags,
the registry entry), ``run`` (read training runs or a saved emergence.json), ``results`` (the typed
``RunCurves``) and ``report`` (totals, table, figure). No claims: it draws, it decides nothing."""
