"""Run by the WebUI's installer step (``python install.py`` with the WebUI on PYTHONPATH).

The host provides everything this extension needs (torch, gradio, the models), so nothing
is installed; this only checks that the host is recent enough and says so in one line.
"""

import re

MINIMUM = (1, 6, 0)


def host_version() -> tuple[int, int, int] | None:
    try:
        import launch  # the WebUI's own launcher module

        tag = launch.git_tag() or ""
    except Exception:
        return None
    # A1111: "v1.10.1[-N-gHASH]"; Forge: "f2.0.1v1.10.1-previous-...": the last vX.Y.Z is the A1111 base.
    found = re.findall(r"v(\d+)\.(\d+)\.(\d+)", tag)
    return tuple(int(g) for g in found[-1]) if found else None


version = host_version()
if version is not None and version < MINIMUM:
    print(f"[Mixture of Diffusers] WebUI {'.'.join(map(str, version))} is too old: this extension needs "
          f"{'.'.join(map(str, MINIMUM))} or newer; update the WebUI (git pull) to use it.")
