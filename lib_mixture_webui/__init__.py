"""The A1111 WebUI adapter: everything that imports the WebUI's ``modules``.

``hook`` installs the class-level dispatch on ``CFGDenoiser.forward``; ``job`` turns a
validated preset and a processing object ``p`` into per-pass mixture state; ``conds``
encodes region prompts with the host's prompt parser; ``args`` reads the script's
arguments from the UI, the API and pasted infotext. The engine (``lib_mixture``) knows
none of this.
"""
