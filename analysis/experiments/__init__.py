"""Named end-to-end experiments (``mvjax experiment NAME``): each writes ``results.json`` with its
full config and definitions, figures, and a Markdown report into one output directory."""
