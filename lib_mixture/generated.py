"""Files written from the field table (`lib_mixture.fields`), checked in, never edited by hand.

- ``schema/preset.schema.json``: the JSON Schema of a preset;
- ``javascript/mixture_of_diffusers_0_fields.js``: the editor's limits, defaults and tooltips
  (global ``MoDFields``; ``module.exports`` under node), and the coefficients of every stored cost
  model (`lib_mixture.cost`) for its time and memory estimate and its "auto" choice. Named to sort first: the WebUI loads an
  extension's scripts in filename order and the editor's core reads it when it loads;
- the field table in ``README.md``, between the ``fields:begin``/``fields:end`` markers.

``python -m lib_mixture.generated --write`` rewrites them; ``--check`` (and
``tests/test_fields.py``) exits 1 naming every stale file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import auto_plan, cost
from . import fields as F
from .fields import FIELDS, Field, children

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schema" / "preset.schema.json"
JS_PATH = ROOT / "javascript" / "mixture_of_diffusers_0_fields.js"
README_PATH = ROOT / "README.md"
BEGIN, END = "<!-- fields:begin (python -m lib_mixture.generated --write) -->", "<!-- fields:end -->"

# Rules between fields, which the table's columns cannot say; the validator has the same in
# `lib_mixture.preset._upscale`.
_OBJECT_RULES: dict[str, dict[str, Any]] = {
    "upscale": {  # a target size is width and height together, never with a scale; null means absent
        "allOf": [{"if": {"type": "object", "required": [key], "properties": {key: {"type": "integer"}}},
                   "then": {"required": [other], "properties": {other: {"type": "integer"}}}}
                  for key, other in (("width", "height"), ("height", "width"))],
        "not": {"type": "object", "required": ["scale", "width"],
                "properties": {"scale": {"type": "number"}, "width": {"type": "integer"}}},
    },
}


# --------------------------------------------------------------------------- JSON Schema


def _typed(kind: str, nullable: bool) -> Any:
    return [kind, "null"] if nullable else kind


def _number_schema(f: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"type": _typed(f.kind, f.nullable)}
    if f.fraction is not None:  # px or fraction of the canvas: the union of both ranges
        out["exclusiveMinimum" if f.minimum else "minimum"] = 0
    elif f.exclusive_minimum:
        out["exclusiveMinimum"] = f.minimum
    else:
        out["minimum"] = f.minimum
    out["maximum"] = f.maximum
    if f.multiple_of:
        out["multipleOf"] = f.multiple_of
    return out


def field_schema(f: Field) -> dict[str, Any]:
    """The JSON Schema of one row (an object row with its children)."""
    if f.kind == "const":
        out: dict[str, Any] = {"const": f.default if f.default != F.REQUIRED else f.minimum}
    elif f.kind == "enum":
        out = {"enum": list(f.options)}
    elif f.kind == "string":
        out = {"type": "string"}
        if f.non_blank:
            out.update(minLength=1, pattern="\\S")
        if f.max_length:
            out["maxLength"] = f.max_length
    elif f.kind in ("integer", "number"):
        out = _number_schema(f)
        if f.per_axis:
            out = {"oneOf": [out, object_schema(f.path, nullable=False)]}
        if f.auto:
            out = {"oneOf": [out, {"const": F.AUTO}]}
    elif f.kind == "object":
        out = object_schema(f.path, f.nullable)
    elif f.kind == "list":
        out = {"type": "array", "items": object_schema(f.path + "[]", nullable=False)}
    else:
        raise ValueError(f"{f.path}: unknown kind {f.kind!r}")
    if f.default is not None and f.default != F.REQUIRED and f.kind != "const":
        out["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
    elif f.default is None and f.nullable and f.kind not in ("object",):
        out["default"] = None
    out["description"] = f.doc
    return out


def object_schema(path: str, nullable: bool) -> dict[str, Any]:
    rows = children(path)
    out: dict[str, Any] = {"type": _typed("object", nullable), "additionalProperties": False}
    required = [r.key for r in rows if r.required]
    if required:
        out["required"] = required
    out["properties"] = {r.key: field_schema(r) for r in rows}
    out.update(_OBJECT_RULES.get(path, {}))
    return out


def preset_schema() -> dict[str, Any]:
    """The whole preset's JSON Schema (draft 2020-12)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/sd-webui-mixture-of-diffusers/schema/preset.schema.json",
        "title": "Mixture of Diffusers preset",
        "description": "One JSON object that is the preset file, the API argument (alwayson_scripts) and the "
                       "infotext value. Generated from lib_mixture/fields.py. The extension's validator "
                       "(lib_mixture/preset.py) is the reference and adds checks JSON Schema cannot express: "
                       "overlaps below the tile size; regions inside the canvas; region box ranges by units "
                       "(px: width and height 8 or more; fraction: x and y in [0, 1], width and height in "
                       "(0, 1]); a tile grid or at least one region; the form of sha256: guide references; "
                       "NaN and infinities (which strict JSON cannot carry); the server's limits.",
        **object_schema("", nullable=False),
    }


# --------------------------------------------------------------------------- the editor's module


def js_module() -> str:
    """``javascript/mixture_of_diffusers_0_fields.js``: every row as plain data."""
    rows = {}
    for f in FIELDS:
        row = {"kind": f.kind, "doc": f.doc}
        for key, value in (("min", f.minimum), ("max", f.maximum), ("multipleOf", f.multiple_of),
                           ("options", list(f.options) or None), ("fraction", f.fraction),
                           ("maxLength", f.max_length)):
            if value is not None:
                row[key] = list(value) if isinstance(value, tuple) else value
        for key, flag in (("exclusiveMin", f.exclusive_minimum), ("nullable", f.nullable),
                          ("perAxis", f.per_axis), ("required", f.required), ("auto", f.auto)):
            if flag:
                row[key] = True
        if f.unit:
            row["unit"] = f.unit
        if not f.required:
            row["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        rows[f.path] = row
    # One row a line: a diff shows which field changed.
    lines = [f"        {json.dumps(path)}: {json.dumps(row, ensure_ascii=False)}" for path, row in rows.items()]
    costs = []
    for name in cost.available():
        m = cost.load(name)
        costs.append(f"            {json.dumps(name)}: " + json.dumps(
            {"name": m.name, "source": m.source, "family": m.family, "device": m.device, "dtype": m.dtype,
             "tileSides": list(m.tile_sides), "weightsBytes": m.weights_bytes, "call": m.call, "rowCell": m.row_cell,
             "rowCell2": m.row_cell2, "baseBytes": m.base_bytes, "rowCellBytes": m.row_cell_bytes,
             "rowCell2Bytes": m.row_cell2_bytes}, ensure_ascii=False))
    body = "{\n" + f"        \"version\": {F.VERSION},\n        \"fields\": {{\n" + ",\n".join(
        "    " + line for line in lines) + "\n        },\n" + \
        f"        \"defaultCostModel\": {json.dumps(cost.DEFAULT)},\n" + \
        "        \"auto\": " + json.dumps({
            "fallbackSide": auto_plan.FALLBACK_SIDE, "fallbackBatch": auto_plan.FALLBACK_BATCH,
            "defaultBudgetGib": auto_plan.DEFAULT_BUDGET_GIB, "sideStep": cost.SIDE_STEP, "maxBatch": cost.MAX_BATCH,
            "rowsPerCrop": cost.ROWS_PER_CROP}) + ",\n" + \
        "        \"costModels\": {\n" + ",\n".join(costs) + "\n        }\n    }"
    return ("/*\n * Mixture of Diffusers: the preset format's fields (limits, defaults, one-line docs).\n"
            " * GENERATED from lib_mixture/fields.py by `python -m lib_mixture.generated --write`; do not edit.\n"
            " * Named to sort first: the WebUI loads an extension's scripts in filename order, and\n"
            " * mixture_of_diffusers_core.js reads MoDFields when it loads.\n */\n"
            "(function(root) {\n    \"use strict\";\n    var MoDFields = "
            + body + ";\n"
            "    if (typeof module !== \"undefined\" && module.exports) module.exports = MoDFields;\n"
            "    else root.MoDFields = MoDFields;\n"
            "})(typeof window !== \"undefined\" ? window : this);\n")


# --------------------------------------------------------------------------- the README's table


def allowed_text(f: Field) -> str:
    """What a row allows, in words (the README's "allowed" column)."""
    if f.kind == "const":
        text = f"`{f.minimum}`"
    elif f.kind == "enum":
        text = " or ".join(f"`\"{o}\"`" for o in f.options)
    elif f.kind == "string":
        text = "text" + (f", up to {f.max_length} characters" if f.max_length else "")
    elif f.kind == "object":
        text = "an object"
    elif f.kind == "list":
        text = "a list"
    else:
        text = f.range_text()
        if f.fraction is not None:
            text += f"; fraction: {f.range_text(fraction=True)}"
        if f.multiple_of:
            text += f", a multiple of {f.multiple_of}"
        if f.per_axis:
            text += ", or `{\"x\", \"y\"}`"
        if f.auto:
            text += f", or `\"{F.AUTO}\"`"
    notes = [n for n in (f.allowed_note, "not empty" if f.non_blank else "", "or `null`" if f.nullable else "") if n]
    return "; ".join([text, *notes]) if notes else text


def _default_text(f: Field) -> str:
    if f.required:
        return "required"
    if f.kind in ("object",) or f.default is None and not f.nullable:
        return ""
    return "`" + json.dumps(list(f.default) if isinstance(f.default, tuple) else f.default) + "`"


def readme_table() -> str:
    lines = ["| field | meaning | allowed | default |", "|---|---|---|---|"]
    for f in FIELDS:
        lines.append(f"| `{f.path}` | {f.doc} | {allowed_text(f)} | {_default_text(f)} |")
    return "\n".join(lines)


def _readme(current: str) -> str:
    head, sep, rest = current.partition(BEGIN)
    if not sep or END not in rest:
        raise ValueError(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    return head + BEGIN + "\n" + readme_table() + "\n" + END + rest.split(END, 1)[1]


def outputs() -> dict[Path, str]:
    """Each generated file's path and the text it must have now."""
    readme = README_PATH.read_text(encoding="utf-8")
    return {
        SCHEMA_PATH: json.dumps(preset_schema(), indent=2, ensure_ascii=False) + "\n",
        JS_PATH: js_module(),
        README_PATH: _readme(readme),
    }


def stale() -> list[Path]:
    """The generated files whose text differs from what the table gives."""
    return [p for p, text in outputs().items() if not p.exists() or p.read_text(encoding="utf-8") != text]


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib_mixture.generated", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the stale files")
    args = parser.parse_args(argv)
    paths = stale()
    if args.write:
        for path, text in outputs().items():
            if path in paths:
                path.write_text(text, encoding="utf-8")
                print(f"wrote {_name(path)}")
        return 0
    for path in paths:
        print(f"stale: {_name(path)} (run python -m lib_mixture.generated --write)", file=sys.stderr)
    return 1 if paths else 0


if __name__ == "__main__":
    sys.exit(main())
