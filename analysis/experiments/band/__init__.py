"""``mvjax experiment band``: what sets where massive K dims sit — their RoPE band against the
training context. ``cli`` (flags, reading and writing band.json; the registry entry), ``run`` (the
measurement: each head's strongest K pair), ``results`` (the typed ``Band``), ``claims`` (the two
rules fixed before the runs) and ``report`` (table, figure)."""
