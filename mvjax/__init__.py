"""mvjax: massive values in self-attention, studied causally in JAX."""

__version__ = "0.1.0"
