"""Mixture of Diffusers engine: host-agnostic (torch, numpy, pillow; never the WebUI's ``modules``).

Data flows one way: a preset (``preset``) is validated, resolved on a canvas into a plan
(``plan``, ``planner``, ``geometry``), compiled into a mixture over latent crops
(``mixture``, ``weights``) and driven by the host's denoiser once per sampling step.
The torch-free modules import without torch, so the plan preview runs anywhere.
"""

__version__ = "0.1.0"
