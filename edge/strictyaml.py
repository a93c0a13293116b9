"""YAML for configuration files, read strictly: what a config never needs is refused.

* No anchors and aliases: they are what make a few lines of YAML expand to
  billions of nodes ("billion laughs", chains of ``<<`` merges).
* Nesting at most :data:`MAX_DEPTH` deep, so it never reaches Python's
  recursion limit.
* A key given twice is refused (PyYAML would keep the last one silently).
* YAML 1.2 booleans: only true/false. YAML 1.1 (PyYAML's default) also reads
  yes/no/on/off as booleans, so ``liveness.mode: off`` would be False.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

import yaml
from yaml import YAMLError

__all__ = ["MAX_DEPTH", "YAMLError", "read_yaml", "short"]

#: Sections hold values, so a config is three levels deep; past this it is refused.
MAX_DEPTH = 20

#: Values quoted in error messages are cut short: the message is one line.
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlist = _repr.maxdict = 6
_repr.maxlevel = 2
short = _repr.repr


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases, and only so deep.

    A config has no use for aliases, and they are what make a few lines of
    YAML expand to billions of nodes ("billion laughs", chains of ``<<``
    merges); the depth limit keeps nesting from reaching Python's recursion
    limit.
    """

    _depth = 0

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A key given twice is refused: PyYAML would keep the last one silently."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: refused by PyYAML itself below
                continue
            if first is not None:
                problem = f"duplicate key {short(key)} is not allowed, first on line {first}"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed", self.peek_event().start_mark
            )
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nesting over {MAX_DEPTH} deep is not allowed",
                self.peek_event().start_mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.2 booleans: only true/false. YAML 1.1 (PyYAML's default) also reads
# yes/no/on/off as booleans, so `liveness.mode: off` would be False. Boolean
# keys still take yes/no/on/off: pydantic reads those strings as booleans.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(text: str) -> Any:
    """The document in ``text``, read with the rules above; raises :class:`yaml.YAMLError`
    (or a builtin from PyYAML's constructors on bad scalars such as 2001-13-45)."""
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
