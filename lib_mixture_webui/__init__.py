"""The A1111 WebUI adapter: everything that imports the WebUI's ``modules``.

``patches`` registers and installs every host patch (the ``CFGDenoiser.forward`` dispatch, the
VAE classes, per-job ``p.close`` and ``p.rng.next``); ``context`` is the one job context on
``p`` (``p._mod``); ``job`` holds the preset on its canvas and its plans; ``passes`` builds a
pass's host side (``conds`` region prompts, ``noise`` region seeds, ``guides`` guide images);
``hook`` and ``vae`` are the wrappers; ``args`` reads the script's arguments from the UI, the
API and pasted infotext; ``panel``, ``preset_handlers`` and ``user_presets`` are the panel;
``settings`` the server owner's options. The engine (``lib_mixture``) knows none of this.
"""
