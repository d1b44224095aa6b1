"""The panel's preset row: what its dropdown, buttons and confirm row do (gradio event handlers).

The files themselves are kept by ``user_presets``; these functions turn its answers and errors
into the panel's updates. A question (overwrite, delete) is not acted on at once: it shows the
confirm row and keeps the pending action as JSON in a gr.State, which ``confirmed`` carries out.
``panel`` wires them to the components.
"""

from __future__ import annotations

import html
import json

import gradio as gr

from lib_mixture.preset import PresetError, load_preset, loads_preset
from lib_mixture_webui import user_presets

# The confirm row hidden again, its question and pending action cleared.
_NO_CONFIRM = (gr.update(visible=False), "", "")


def choices():
    return user_presets.choices()


def refresh(current):
    labels = choices()
    return gr.update(choices=labels, value=current if current in labels else None)


def load(label):
    if not label:
        return gr.update(), "Choose a preset first."
    try:
        preset = user_presets.load(label)
    except KeyError:
        return gr.update(), error_html(f"no preset '{label}' (deleted or renamed? press \U0001f504)")
    except PresetError as e:
        return gr.update(), error_html(e)
    return preset.to_json(), f"Loaded <b>{html.escape(label)}</b>."


def save(text, name, overwrite=False):
    try:
        path = user_presets.save(text, name, overwrite=overwrite)
    except FileExistsError:
        clean = user_presets.safe_name(name)
        question = (f"A preset named <b>{html.escape(clean)}</b> exists. Replace it with the current "
                    "configuration?")
        return (gr.update(), "", gr.update(), gr.update(visible=True), question,
                json.dumps({"action": "overwrite", "name": clean}))
    except (ValueError, PresetError, OSError) as e:
        return (gr.update(), error_html(f"not saved: {e}"), gr.update(), *_NO_CONFIRM)
    label = user_presets.label_for(user_presets.USER, path.stem)
    saved = load_preset(path)
    return (saved.to_json(), f"Saved <b>{html.escape(label)}</b> to <code>{html.escape(str(path))}</code>.",
            gr.update(choices=choices(), value=label), *_NO_CONFIRM)


def ask_delete(label):
    try:
        kind, name, path = user_presets.resolve(label)
    except KeyError:
        return ("Choose one of your presets (user/...) first.", *_NO_CONFIRM)
    if kind != user_presets.USER:
        return (f"<b>{html.escape(label)}</b> is bundled with the extension; only your own presets can be deleted.",
                *_NO_CONFIRM)
    question = f"Delete your preset <b>{html.escape(name)}</b> (<code>{html.escape(str(path))}</code>)?"
    return ("", gr.update(visible=True), question, json.dumps({"action": "delete", "label": label}))


def confirmed(pending, text):
    try:
        job = json.loads(pending) if pending else {}
    except json.JSONDecodeError:
        job = {}
    if job.get("action") == "overwrite":
        return save(text, job.get("name", ""), overwrite=True)
    if job.get("action") == "delete":
        try:
            path = user_presets.delete(job.get("label", ""))
        except (KeyError, ValueError, OSError) as e:
            return (gr.update(), error_html(f"not deleted: {e}"), gr.update(), *_NO_CONFIRM)
        return (gr.update(), f"Deleted <code>{html.escape(str(path))}</code>.",
                gr.update(choices=choices(), value=None), *_NO_CONFIRM)
    return (gr.update(), "", gr.update(), *_NO_CONFIRM)


def cancelled():
    return ("Cancelled.", *_NO_CONFIRM)


def import_file(file):
    path = getattr(file, "name", file)
    if not path:
        return gr.update(), "No file."
    try:
        preset = user_presets.import_file(path)
    except PresetError as e:
        return gr.update(), error_html(e)
    return preset.to_json(), "Imported the file; <b>Save</b> keeps it among your presets."


def check(text):
    """The problems line under the editor: empty when the JSON is a valid preset."""
    try:
        loads_preset(text)
    except PresetError as e:
        return error_html(e)
    return ""


def error_html(error):
    return f"<pre class='mod-error'>{html.escape(str(error))}</pre>"
