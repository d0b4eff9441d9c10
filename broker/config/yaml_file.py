"""The one YAML loader for files a person writes: covenants and the config.

Bounded on purpose. YAML anchors and aliases let a few kilobytes stand for gigabytes once
the tree is walked (an "alias bomb": `covenant_hash` and `model_dump` walk it), and neither
a covenant nor a config needs them, so they are refused outright, at the event level,
before any node is built. A key written twice in one mapping is refused too (YAML keeps
the last one silently). The file is read with a bound: never more than the limit plus one
byte, so an oversized file is refused without being held in memory.

The policy layer imports this; this module imports nothing of the broker but the errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# The shipped covenant is 7 KB and a config a few hundred bytes; the pure-Python parser
# (whose composer can be told to refuse aliases) reads this much in well under a second.
MAX_YAML_BYTES = 256 * 1024
_REFUSED = "(YAML anchors and aliases are refused: write the value out)"


class YamlFileError(Exception):
    """A YAML file or text that is refused; callers wrap it in their own error family.

    `line` is 1-based, or None when the problem is the file as a whole; `whole_file` says
    the file could not be read or is too large (nothing of its content was parsed).
    """

    def __init__(self, source: str, problem: str, line: int | None = None,
                 whole_file: bool = False, syntax_column: int | None = None) -> None:
        self.source = source
        self.whole_file = whole_file
        self.problem = problem
        self.line = line
        self.syntax_column = syntax_column  # set for YAML that does not parse
        if syntax_column is not None and line is not None:
            text = f"{source}: not valid YAML at line {line} column {syntax_column}: {problem}"
        else:
            text = f"{source}: {problem}" + (f" (line {line})" if line is not None else "")
        super().__init__(text)


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and a key written twice in one mapping.

    The composer sees every alias and anchor event before a node exists, so a refusal
    costs nothing however much the document would expand. (The C loader composes in C,
    out of reach of this override, hence the pure-Python base.)
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} is not allowed {_REFUSED}", mark)
        anchor = getattr(event, "anchor", None)  # scalar, sequence and mapping starts
        if anchor is not None:
            raise yaml.composer.ComposerError(
                None, None, f"anchor &{anchor} is not allowed {_REFUSED}", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                written_twice = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key; the base class refuses it with its mark
                break
            if written_twice:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice in one mapping",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_bounded(path: Path, max_bytes: int = MAX_YAML_BYTES) -> bytes:
    """The file's bytes, reading at most max_bytes + 1; refuse a larger file by name."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise YamlFileError(str(path), f"cannot be read: {exc.strerror}",
                            whole_file=True) from None
    if len(data) > max_bytes:
        raise YamlFileError(str(path), f"larger than the limit of {max_bytes} bytes",
                            whole_file=True)
    return data


def parse_yaml(data: bytes | str, source: str,
               max_bytes: int = MAX_YAML_BYTES) -> tuple[yaml.Node | None, Any]:
    """(root node, value) of one YAML document, or YamlFileError naming source and line.

    The node is returned so a caller can point its own errors at lines.
    """
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise YamlFileError(source, f"larger than the limit of {max_bytes} bytes",
                            whole_file=True)
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlFileError(source, f"not valid UTF-8 at byte {exc.start}") from None
    else:
        text = data
    loader = BoundedLoader(text)
    try:
        root = loader.get_single_node()
        value = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:  # the position and problem, not the quoted line
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        if mark is None:
            raise YamlFileError(source, f"not valid YAML: {problem}") from None
        raise YamlFileError(source, problem, mark.line + 1,
                            syntax_column=mark.column + 1) from None
    finally:
        loader.dispose()
    return root, value


def load_yaml_file(path: Path, max_bytes: int = MAX_YAML_BYTES) -> tuple[yaml.Node | None, Any]:
    """Read (bounded) and parse one YAML file; see parse_yaml."""
    return parse_yaml(read_bounded(path, max_bytes), str(path), max_bytes)
