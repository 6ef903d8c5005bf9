"""Slow, plainly correct oracles for every kernel (``ref_<public name>``).

Each one is the obvious NumPy / Python transcription of SPEC §4-5 and says which
kernel it mirrors. They never import flk_fast's compiled modules.
"""
