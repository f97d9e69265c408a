"""Payload codecs: user values to payloads and back (pure: no I/O, no clock).

A codec turns values into :data:`~engine._events.Payload` envelopes and back,
decoding into the type a function annotates (a dataclass parameter receives
that dataclass).  ``JsonCodec`` is the default: inline JSON text, readable in a
history file.  Compression, encryption and CAS offload wrap it (see the CAS
work); they must keep ``fingerprint`` computed over the plaintext encoding, so
that argument checks on replay never depend on a nonce or a key.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from ._events import Json, Payload

__all__ = ["Codec", "JsonCodec", "fingerprint"]


def fingerprint(data: bytes) -> int:
    """A 64-bit fingerprint (CRC-32 and length) of an encoding, for determinism checks.

    Not a security hash: it detects a changed argument, it does not hide one.
    """
    return zlib.crc32(data) | (len(data) << 32)


class Codec(Protocol):
    """What the interpreter, worker and client need of a codec."""

    def encode(self, value: Any) -> Payload: ...

    def decode(self, payload: Payload, type: Any = Any) -> Any: ...

    def encode_args(self, args: Sequence[Any]) -> tuple[Payload, int]:
        """The payload of an argument list and its :func:`fingerprint`."""
        ...

    def fingerprint_args(self, args: Sequence[Any]) -> int: ...

    def decode_args(self, payload: Payload, types: Sequence[Any], rest: Any) -> list[Any]:
        """Decode an argument list: ``types`` per position, ``rest`` for ``*args`` (or None)."""
        ...


class JsonCodec:
    """The default codec: msgspec JSON, inline.

    >>> c = JsonCodec()
    >>> c.decode(c.encode({"cents": 999}))
    {'cents': 999}
    """

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
        self._raw_list = msgspec.json.Decoder(list[msgspec.Raw])

    def _encode(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value)
        except (TypeError, msgspec.EncodeError, OverflowError) as exc:
            raise TypeError(
                f"{value!r} cannot be serialised ({exc}); workflow and activity inputs, "
                f"results and signal payloads must be msgspec-serialisable values "
                f"(str, int, float, bool, None, lists, dicts, dataclasses, msgspec Structs, "
                f"enums, datetimes, bytes)"
            ) from None

    def _decoder(self, tp: Any) -> msgspec.json.Decoder[Any]:
        try:
            return self._decoders[tp]
        except KeyError:
            dec = self._decoders[tp] = msgspec.json.Decoder(tp)
            return dec
        except TypeError:  # an unhashable annotation: build one each time
            return msgspec.json.Decoder(tp)

    def encode(self, value: Any) -> Payload:
        return Json(text=self._encode(value).decode())

    def decode(self, payload: Payload, type: Any = Any) -> Any:
        if payload.__class__ is not Json:
            raise TypeError(
                f"a {payload.__class__.__name__} payload needs a codec chain that can read it "
                f"(compression, encryption or a CAS); this JsonCodec only reads inline JSON"
            )
        try:
            try:
                decoder = self._decoders[type]
            except (KeyError, TypeError):  # not built yet, or an unhashable annotation
                decoder = self._decoder(type)
            return decoder.decode(payload.text)
        except msgspec.ValidationError as exc:
            raise TypeError(f"payload does not match the annotated type {type!r}: {exc}") from None

    def encode_args(self, args: Sequence[Any]) -> tuple[Payload, int]:
        data = self._encode(args)
        return Json(text=data.decode()), fingerprint(data)

    def fingerprint_args(self, args: Sequence[Any]) -> int:
        try:  # NB: inlined: this runs for every command on replay
            data = self._encoder.encode(args)
        except Exception:
            data = self._encode(args)  # raises the clear error
        return zlib.crc32(data) | (len(data) << 32)

    def decode_args(self, payload: Payload, types: Sequence[Any], rest: Any) -> list[Any]:
        raws: list[msgspec.Raw] = self.decode(payload, list[msgspec.Raw])
        if len(raws) > len(types) and rest is None:
            raise TypeError(f"got {len(raws)} arguments, the function takes {len(types)}")
        out = []
        for i, raw in enumerate(raws):
            tp = types[i] if i < len(types) else rest
            try:
                out.append(self._decoder(tp).decode(raw))
            except msgspec.ValidationError as exc:
                raise TypeError(f"argument {i + 1} does not match {tp!r}: {exc}") from None
        return out
