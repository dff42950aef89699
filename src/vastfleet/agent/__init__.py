"""The instance side: the stdlib-only agent (`agent.py`, shipped as one file), the onstart builder and the
per-attempt agent tokens. Nothing in this package imports anything outside the standard library, and this
`__init__` imports nothing, so `agent.py` can be read and shipped on its own."""
