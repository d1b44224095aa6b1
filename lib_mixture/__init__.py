"""Mixture of Diffusers engine: host-agnostic (torch, numpy, pillow; never the WebUI's ``modules``).

Data flows one way: a preset is validated against the field table (``fields``, ``checker``,
``preset``), resolved on a canvas into a plan (``plan``, ``planner``, ``geometry``), turned into
a pass over latent crops (``passes``, ``mixture``, ``weights``, ``guide``) and driven by the
host's denoiser once per sampling step (``denoiser_hook``). ``tiled_vae`` is the exact tiled
VAE; ``generated`` writes the schema, the editor's field module and the README's field table.
The torch-free modules import without torch, so the plan preview runs anywhere.
"""

__version__ = "0.1.0"
