"""Payload codecs: user values to payloads and back (pure: no I/O, no clock).

A codec turns values into plain :data:`~engine._events.Payload`\\ s and back,
decoding into the type a function annotates (a dataclass parameter receives
that dataclass).  ``JsonCodec`` is the default: inline JSON text, readable in a
history file; ``MsgpackCodec`` writes ``Inline`` msgpack bytes.  Both read
both, so a deployment can switch formats without breaking old histories.

Compression, encryption and CAS offload are envelopes around these plain
payloads, applied where events enter and leave a store (``engine._payloads``);
the interpreter only ever sees plain payloads.  ``fingerprint`` is computed over
the plain encoding, so argument checks on replay never depend on a nonce or a key.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import msgspec

from ._errors import PayloadTooLargeError
from ._events import Inline, Json, Payload

__all__ = ["DEFAULT_MAX_PAYLOAD", "Codec", "JsonCodec", "MsgpackCodec", "fingerprint"]

#: The default hard limit on one encoded payload: 50 MiB.
DEFAULT_MAX_PAYLOAD: Final = 50 * 1024 * 1024


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


_json_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_mp_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def _json_decoder(tp: Any) -> msgspec.json.Decoder[Any]:
    try:
        return _json_decoders[tp]
    except KeyError:
        dec = _json_decoders[tp] = msgspec.json.Decoder(tp)
        return dec
    except TypeError:  # an unhashable annotation: build one each time
        return msgspec.json.Decoder(tp)


def _mp_decoder(tp: Any) -> msgspec.msgpack.Decoder[Any]:
    try:
        return _mp_decoders[tp]
    except KeyError:
        dec = _mp_decoders[tp] = msgspec.msgpack.Decoder(tp)
        return dec
    except TypeError:
        return msgspec.msgpack.Decoder(tp)


def _decode_plain(payload: Payload, tp: Any) -> Any:
    """Decode a ``Json`` or msgpack ``Inline`` payload into ``tp``."""
    cls = payload.__class__
    try:
        if cls is Json:
            try:
                jdec = _json_decoders[tp]
            except (KeyError, TypeError):  # not built yet, or an unhashable annotation
                jdec = _json_decoder(tp)
            return jdec.decode(payload.text)  # type: ignore[union-attr]
        if cls is Inline and payload.encoding == "msgpack":  # type: ignore[union-attr]
            return _mp_decoder(tp).decode(payload.data)  # type: ignore[union-attr]
    except msgspec.ValidationError as exc:
        raise TypeError(f"payload does not match the annotated type {tp!r}: {exc}") from None
    if cls is Inline:
        raise TypeError(
            f"an Inline payload in encoding {payload.encoding!r} cannot be read: "  # type: ignore[union-attr]
            f"this codec reads JSON and msgpack"
        )
    raise TypeError(
        f"a {cls.__name__} payload needs the codec chain that wrote it (compression, "
        f"encryption or a CAS): decode it with Client.decode() or a PayloadCodec with the "
        f"same keys and cas; this codec reads only plain JSON and msgpack payloads"
    )


class JsonCodec:
    """The default codec: msgspec JSON, inline, up to ``max_payload`` bytes per payload.

    >>> c = JsonCodec()
    >>> c.decode(c.encode({"cents": 999}))
    {'cents': 999}
    """

    format: str = "json"

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if not isinstance(max_payload, int) or max_payload <= 0:
            raise ValueError(f"max_payload must be a positive number of bytes, got {max_payload!r}")
        self.max_payload = max_payload
        self._encode_raw: Callable[[Any], bytes] = self._new_encoder()
        self._raw_list: Any = list[msgspec.Raw]

    def _new_encoder(self) -> Callable[[Any], bytes]:
        return msgspec.json.Encoder().encode

    def _wrap(self, data: bytes) -> Payload:
        return Json(text=data.decode())

    def _encode(self, value: Any) -> bytes:
        try:
            data = self._encode_raw(value)
        except (TypeError, msgspec.EncodeError, OverflowError) as exc:
            raise TypeError(
                f"{value!r} cannot be serialised ({exc}); workflow and activity inputs, "
                f"results and signal payloads must be msgspec-serialisable values "
                f"(str, int, float, bool, None, lists, dicts, dataclasses, msgspec Structs, "
                f"enums, datetimes, bytes)"
            ) from None
        if len(data) > self.max_payload:
            raise PayloadTooLargeError(
                f"an encoded payload of {len(data):,} bytes is above the limit of "
                f"{self.max_payload:,} bytes (max_payload); pass large data by reference "
                f"(a file or object-store key) or raise the codec's max_payload"
            )
        return data

    def encode(self, value: Any) -> Payload:
        return self._wrap(self._encode(value))

    def decode(self, payload: Payload, type: Any = Any) -> Any:
        return _decode_plain(payload, type)

    def encode_args(self, args: Sequence[Any]) -> tuple[Payload, int]:
        data = self._encode(args)
        return self._wrap(data), fingerprint(data)

    def fingerprint_args(self, args: Sequence[Any]) -> int:
        try:  # NB: inlined: this runs for every command on replay
            data = self._encode_raw(args)
        except Exception:
            data = self._encode(args)  # raises the clear error
        return zlib.crc32(data) | (len(data) << 32)

    def decode_args(self, payload: Payload, types: Sequence[Any], rest: Any) -> list[Any]:
        raws: list[msgspec.Raw] = _decode_plain(payload, self._raw_list)
        if len(raws) > len(types) and rest is None:
            raise TypeError(f"got {len(raws)} arguments, the function takes {len(types)}")
        decoder = _json_decoder if payload.__class__ is Json else _mp_decoder
        out = []
        for i, raw in enumerate(raws):
            tp = types[i] if i < len(types) else rest
            try:
                out.append(decoder(tp).decode(raw))
            except msgspec.ValidationError as exc:
                raise TypeError(f"argument {i + 1} does not match {tp!r}: {exc}") from None
        return out


class MsgpackCodec(JsonCodec):
    """Like :class:`JsonCodec`, but payloads are msgpack bytes (``Inline``): smaller, not readable.

    >>> c = MsgpackCodec()
    >>> c.encode([1, 2]).encoding
    'msgpack'
    """

    format: str = "msgpack"

    def _new_encoder(self) -> Callable[[Any], bytes]:
        return msgspec.msgpack.Encoder().encode

    def _wrap(self, data: bytes) -> Payload:
        return Inline(data=data)
