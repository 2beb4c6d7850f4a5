"""One entry module per program (python -m workers.<program>)."""
