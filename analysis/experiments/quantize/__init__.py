"""``mvjax experiment quantize``: fake-quantized Q/K activations and W_q/W_k, with and without the
massive dims kept. ``cli`` (flags → ``QuantizeConfig``, the registry entry), ``run`` (the engine),
``claims`` and ``report``; its typed records are ``analysis.records``, shared with disrupt."""
