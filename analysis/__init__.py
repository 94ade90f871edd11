"""Analysis programs: find, disrupt and quantize around massive values."""
