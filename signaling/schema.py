"""What the project's JSON message schemas share: a msgspec base class and the words for a refusal.

Three protocols take JSON objects from outside: the signaling messages
(``signaling.protocol``), the call's control channel (``live.wire``) and the web demo's
``/ws`` (``web_demo.messages``).  Each declares its messages, with every type and limit,
as subclasses of :class:`Message`: frozen ``msgspec.Struct`` classes tagged by their
``"type"`` field that refuse fields they do not declare.  A :class:`Schema` decodes one
message of a union of them in one call and turns whatever msgspec refuses into
:class:`Refused`, one line of words naming the field.  It lives here, in the package that
imports no other part of the project, so that all three can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar, get_args

import msgspec

__all__ = ["Message", "Refused", "Schema"]

T = TypeVar("T")


class Message(msgspec.Struct, tag_field="type", frozen=True, forbid_unknown_fields=True):
    """A JSON object whose ``"type"`` field names its class (``tag="..."`` on each subclass;
    subclasses repeat ``frozen=True`` for type checkers, msgspec would inherit it)."""

    @property
    def type(self) -> str:
        """The value of the ``"type"`` field."""
        return str(self.__struct_config__.tag)


class Refused(ValueError):
    """A message its schema does not accept; ``str()`` says why, in one line of at most
    ``MAX_WORDS`` printable characters, ``path`` names the field (``"room"``,
    ``"values.yaw"``; ``""`` for the message as a whole)."""

    def __init__(self, words: str, path: str = "") -> None:
        super().__init__(_one_line(words))
        self.path = path


# JSON types as msgspec names them: what a field must be / what it got.
_WANTED = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
           "object": "an object", "array": "an array", "null": "null"}
_GOT = {"str": "string", "int": "number", "float": "number", "bool": "boolean"}
_SCALAR = "bool | int | float | str | null"
_MAX_VALUE_CHARS = 40
#: The longest refusal (values from outside in it are cut to _MAX_VALUE_CHARS before).
MAX_WORDS = 300
_TOO_DEEP = "invalid JSON: nested too deeply"


class Schema(Generic[T]):
    """A union of :class:`Message` classes and its decoder.

    ``rules`` gives, per field path, the words for a value of the right type that breaks a
    limit (a regex pattern reads badly); other refusals are worded from msgspec's own.
    """

    def __init__(self, union: Any, rules: Mapping[str, str] | None = None) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(union)
        members = get_args(union) or (union,)
        #: The ``"type"`` values of the union, in its order.
        self.types = tuple(str(member.__struct_config__.tag) for member in members)
        self.rules = dict(rules or {})

    def decode(self, data: str | bytes) -> T:
        """One message from its JSON text; raises :class:`Refused`."""
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:  # a DecodeError too: first
            # msgspec refuses a value before it reads the rest: text that is no JSON says so first
            _check_syntax(data)
            raise self._refusal(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise _invalid_json(exc) from None
        except RecursionError:
            # msgspec skips the fields before "type" recursively: deep nesting there ends here
            raise Refused(_TOO_DEEP) from None

    def _refusal(self, error: str) -> Refused:
        """msgspec's ``ValidationError`` text in words."""
        what, path = _split_path(error)
        if what.startswith("Expected `object`, got `") and not path:
            return Refused(f"message must be a JSON object, got {_got(what.rsplit('`', 2)[1])}")
        if what.startswith("Object missing required field `"):
            name = what.split("`")[1]
            if name == "type" and not path:
                return Refused("message has no 'type' field")
            return Refused(f"{_subject(path)} is missing the '{name}' field", path)
        if what.startswith("Object contains unknown field `"):
            return Refused(f"{_subject(path)} has unexpected field(s) '{_clip(what.split('`')[1])}'", path)
        if what.startswith("Invalid value ") and path == "type":
            value = what.removeprefix("Invalid value ")
            return Refused(f"unknown message type {_clip(value)}; expected one of {', '.join(self.types)}", path)
        if what.startswith("Expected `"):
            return Refused(self._expected(what, path), path)
        return Refused(f"{_subject(path)}: {_sentence(what)}", path)

    def _expected(self, what: str, path: str) -> str:
        """``Expected `TYPE`[ LIMIT][, got `TYPE`]`` in words."""
        _, wanted, rest = what.split("`", 2)
        got = rest.rsplit("`", 2)[1] if rest.endswith("`") else None
        limit = rest.split(", got `")[0] if got else rest
        if limit and path in self.rules:
            return self.rules[path]
        if wanted == _SCALAR:
            words = "a string, a number, a boolean or null"
        else:
            words = " or ".join(dict.fromkeys(_WANTED.get(name, name) for name in wanted.split(" | ")))
        return f"{_subject(path)} must be {words}{limit}" + (f", got {_got(got)}" if got else "")


def _check_syntax(data: str | bytes) -> None:
    """Raise :class:`Refused` unless ``data`` is one well-formed JSON value."""
    try:
        msgspec.json.decode(data, type=msgspec.Raw)
    except msgspec.DecodeError as exc:
        raise _invalid_json(exc) from None
    except RecursionError:
        raise Refused(_TOO_DEEP) from None


def _invalid_json(error: msgspec.DecodeError) -> Refused:
    return Refused(f"invalid JSON: {_sentence(str(error).removeprefix('JSON is malformed: '))}")


def _split_path(error: str) -> tuple[str, str]:
    """msgspec's ``"WHAT - at `$.a.b`"`` as ``("WHAT", "a.b")`` (``""`` for the message itself)."""
    what, sep, at = error.rpartition(" - at `$")
    if not sep or not at.endswith("`") or "`" in at[:-1]:
        return error, ""
    return what, at[:-1].removeprefix(".")


def _subject(path: str) -> str:
    return f"'{path}'" if path else "message"


def _got(name: str) -> str:
    return _GOT.get(name, name)


def _clip(text: str) -> str:
    """Names and values from outside, cut short for the error message."""
    return text if len(text) <= _MAX_VALUE_CHARS else text[:_MAX_VALUE_CHARS] + "..."


def _one_line(words: str) -> str:
    """`words` as one line: characters that do not print (a newline, a NUL) escaped, the
    whole cut at MAX_WORDS, so that a value from outside cannot break a log line."""
    line = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in words)
    return line if len(line) <= MAX_WORDS else line[:MAX_WORDS - 3] + "..."


def _sentence(text: str) -> str:
    return text[:1].lower() + text[1:]
