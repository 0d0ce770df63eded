"""Each config key's help, read from the schema's own source: the comment beside (or above) its dataclass field.

The config schema is the dataclasses (RunConfig, each curriculum's and learner's
Config, each sleep stage's Options); the comments written next to their fields
are the documentation, so `somna config PRESET` prints the resolved config with
them and there is no second copy of the help to keep true.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

_FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*?(?:#\s*(.*))?$")
_COMMENT = re.compile(r"^\s+#\s?(.*)$")


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment (trailing, else the comment lines right above it), over the dataclass's MRO."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines[1:]:
            if comment := _COMMENT.match(line):
                above.append(comment.group(1).strip())
                continue
            field = _FIELD.match(line)
            if field and field.group(1) in {f.name for f in dataclasses.fields(klass)}:
                text = field.group(2) or " ".join(above)
                if text:
                    comments[field.group(1)] = text.strip()
            above = []
    return comments


def schema_help(cls: type, prefix: str = "") -> dict[str, str]:
    """Dotted key -> help for every field of a dataclass schema, nested dataclasses included."""
    help_by_key: dict[str, str] = {}
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = f"{prefix}{field.name}"
        nested = hints.get(field.name)
        if nested is not None and dataclasses.is_dataclass(nested):
            help_by_key[key] = comments.get(field.name) or _first_doc_line(nested)
            help_by_key |= schema_help(nested, f"{key}.")
        elif field.name in comments:
            help_by_key[key] = comments[field.name]
    return help_by_key


def annotated_yaml(cfg: DictConfig, help_by_key: dict[str, str]) -> str:
    """The config as YAML with each key's help appended as a comment."""
    lines, path = [], []
    for line in OmegaConf.to_yaml(cfg, resolve=True).splitlines():
        match = re.match(r"^(\s*)([^\s:#-][^:]*):(.*)$", line)
        if not match:
            lines.append(line)
            continue
        depth = len(match.group(1)) // 2
        path[depth:] = [match.group(2)]
        help_text = help_by_key.get(".".join(path))
        lines.append(f"{line}  # {help_text}" if help_text else line)
    return "\n".join(lines) + "\n"


def _first_doc_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return "" if doc.startswith(f"{obj.__name__}(") else doc.splitlines()[0] if doc else ""
