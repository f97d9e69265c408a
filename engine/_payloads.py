"""The payload codec chain: compression, encryption and CAS offload around plain payloads.

Every payload is first encoded by a plain codec (msgspec JSON or msgpack; see
``engine._codec``).  On its way into a store it is *sealed*, each step optional:

1. compressed with zstandard when that makes it smaller (``Compressed``);
2. encrypted with AES-256-GCM under a key id that is recorded, so keys can
   rotate (``Encrypted``); with ``data_keys`` every workflow id gets its own
   random data key, kept wrapped by the keyring in a key vault, so deleting one
   workflow's key (:meth:`PayloadCodec.forget`) makes its payloads unreadable
   everywhere without rewriting any history (crypto-shredding);
3. offloaded to a content-addressable store above ``offload_above`` bytes: the
   event keeps only a ``CasRef`` (digest and size).

On its way out of a store it is *opened* again, so the interpreter only ever
sees plain payloads and never does I/O.  Sealing and opening happen in the
worker and the client (:class:`Payloads`), at the store boundary.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import msgspec

from ._codec import DEFAULT_MAX_PAYLOAD, Codec, JsonCodec, MsgpackCodec
from ._errors import CorruptionError, PayloadError, PayloadKeyError, PayloadTooLargeError
from ._events import (
    CasRef,
    Compressed,
    Encrypted,
    Event,
    Inline,
    Json,
    Payload,
    decode_payload,
    encode_payload,
    map_payloads,
)

if TYPE_CHECKING:
    from ._keys import KeyVault

__all__ = ["DEFAULT_OFFLOAD_ABOVE", "BlobStore", "Keyring", "PayloadCodec", "Payloads"]

#: Payloads whose sealed encoding is larger than this go to the CAS (when there is one).
DEFAULT_OFFLOAD_ABOVE: Final = 64 * 1024
#: Payloads smaller than this are not worth compressing.
DEFAULT_COMPRESS_ABOVE: Final = 1024

_EXTRA_HINT = "install it with: pip install 'temporalpp[codecs]'"
_DATA_KEY_PREFIX = "wf:"
_DATA_KEY_TTL = 60.0  # seconds a data key stays cached: forget() reaches other workers by then
_DATA_KEY_CACHE = 10_000  # data keys cached per codec


class BlobStore(Protocol):
    """What the codec chain needs of a CAS (see ``cas.CAS``)."""

    def put(self, data: bytes) -> str: ...

    def get(self, digest: str) -> bytes: ...


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - the extra is part of dev
        raise PayloadError(
            f"payload encryption needs the cryptography package; {_EXTRA_HINT}"
        ) from None
    return AESGCM(key)


class Keyring:
    """AES-GCM keys by id; ``current`` encrypts, every key decrypts (so keys can rotate).

    Keys are 16, 24 or 32 random bytes (:meth:`generate` makes a 32-byte one).
    To rotate, add a new key and make it current; keep the old ones for as long
    as histories written under them must stay readable.

    >>> ring = Keyring({"2026-11": bytes(32)})
    >>> ring.current
    '2026-11'
    """

    def __init__(self, keys: Mapping[str, bytes], current: str | None = None) -> None:
        if not keys:
            raise ValueError("a Keyring needs at least one key: Keyring({'key-id': key_bytes})")
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not key_id or key_id.startswith(_DATA_KEY_PREFIX):
                raise ValueError(
                    f"a key id must be a non-empty string not starting with "
                    f"{_DATA_KEY_PREFIX!r} (kept for per-workflow keys), got {key_id!r}"
                )
            if not isinstance(key, bytes) or len(key) not in (16, 24, 32):
                raise ValueError(
                    f"key {key_id!r} must be 16, 24 or 32 bytes (AES-128/192/256); "
                    f"make one with Keyring.generate()"
                )
        if current is None:
            current = list(keys)[-1]
        if current not in keys:
            raise ValueError(f"current key {current!r} is not in the keyring ({sorted(keys)})")
        self.current = current
        self._ciphers = {key_id: _aesgcm(key) for key_id, key in keys.items()}

    @staticmethod
    def generate() -> bytes:
        """A new random 256-bit key."""
        return os.urandom(32)

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """A keyring from ``"id=hex,id2=hex"`` text from the environment; last is current."""
        keys: dict[str, bytes] = {}
        for part in text.split(","):
            key_id, sep, value = part.strip().partition("=")
            try:
                if not sep:
                    raise ValueError
                keys[key_id] = bytes.fromhex(value)
            except ValueError:
                raise ValueError(
                    "a keyring is written 'key-id=<64 hex digits>[,key-id2=...]' "
                    "(the last key is current)"
                ) from None
        return cls(keys)

    @property
    def ids(self) -> list[str]:
        return list(self._ciphers)

    def cipher(self, key_id: str) -> Any:
        """The AES-GCM cipher of ``key_id``; :class:`PayloadKeyError` if the ring lacks it."""
        try:
            return self._ciphers[key_id]
        except KeyError:
            raise PayloadKeyError(
                f"this payload was encrypted under key {key_id!r}, which the keyring does not "
                f"hold (it has {sorted(self._ciphers)}); add that key to the Keyring to read it"
            ) from None


def data_key_id(workflow_id: str) -> str:
    """The id of ``workflow_id``'s own data key (a digest: the key id reveals no workflow id)."""
    digest = hashlib.sha256(workflow_id.encode("utf-8", "surrogatepass")).hexdigest()
    return _DATA_KEY_PREFIX + digest[:32]


class PayloadCodec:
    """The codec chain: a plain codec, then optional compression, encryption and CAS offload.

    - ``format``: ``"json"`` (readable in history files) or ``"msgpack"``.
    - ``compression``: ``None`` or ``"zstd"`` (payloads from ``compress_above``
      bytes, kept only when smaller).
    - ``keys``: a :class:`Keyring` encrypts every payload with AES-GCM.
    - ``data_keys``: a key vault (``FileKeyVault(path)``, ``MemoryKeyVault()``)
      gives each workflow id its own data key, wrapped by ``keys``;
      :meth:`forget` deletes it (crypto-shredding).
    - ``offload_above``: sealed payloads larger than this go to the worker's or
      client's ``cas=``, if it has one.
    - ``max_payload``: the hard limit on one encoded payload (default 50 MiB).

    The interpreter uses the plain part (``encode``, ``decode``, ...); the
    worker and the client seal and open payloads at the store boundary.
    """

    def __init__(
        self,
        *,
        format: Literal["json", "msgpack"] = "json",
        compression: Literal["zstd"] | None = None,
        compression_level: int = 3,
        compress_above: int = DEFAULT_COMPRESS_ABOVE,
        keys: Keyring | None = None,
        data_keys: KeyVault | None = None,
        offload_above: int = DEFAULT_OFFLOAD_ABOVE,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        if format not in ("json", "msgpack"):
            raise ValueError(f"unknown payload format {format!r}: use 'json' or 'msgpack'")
        if compression not in (None, "zstd"):
            raise ValueError(f"unknown compression {compression!r}: use None or 'zstd'")
        if keys is not None and not isinstance(keys, Keyring):
            raise TypeError(f"keys must be a Keyring, got {keys!r}")
        if data_keys is not None and keys is None:
            raise ValueError("data_keys need a keyring to wrap them: pass keys=Keyring(...)")
        for name, value in (("compress_above", compress_above), ("offload_above", offload_above)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a number of bytes >= 0, got {value!r}")
        self.plain: JsonCodec = (JsonCodec if format == "json" else MsgpackCodec)(
            max_payload=max_payload
        )
        self.format = format
        self.compression = compression
        self.compression_level = compression_level
        self.compress_above = compress_above
        self.keys = keys
        self.data_keys = data_keys
        self.offload_above = offload_above
        self.max_payload = max_payload
        if compression is not None:
            _zstd()  # fail now, not at the first large payload
        self._local = threading.local()
        self._lock = threading.Lock()
        self._data_ciphers: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        # the plain codec's methods, bound once: the interpreter calls them per command
        self.encode = self.plain.encode
        self.encode_args = self.plain.encode_args
        self.fingerprint_args = self.plain.fingerprint_args
        self.decode_args = self.plain.decode_args

    def __repr__(self) -> str:
        parts = [f"format={self.format!r}"]
        if self.compression:
            parts.append(f"compression={self.compression!r}")
        if self.keys is not None:
            parts.append(f"keys=<{len(self.keys.ids)} key(s), current {self.keys.current!r}>")
        if self.data_keys is not None:
            parts.append(f"data_keys={self.data_keys!r}")
        return f"PayloadCodec({', '.join(parts)})"

    @property
    def transforms(self) -> bool:
        """Whether sealing can change a payload other than by CAS offload."""
        return self.compression is not None or self.keys is not None

    def decode(self, payload: Payload, type: Any = Any) -> Any:
        """Decode a payload; envelopes other than ``CasRef`` are opened first."""
        if payload.__class__ is not Json and payload.__class__ is not Inline:
            payload = self.open(payload, None)
        return self.plain.decode(payload, type)

    # ------------------------------------------------------------------ sealing

    def seal(
        self, payload: Payload, workflow_id: str, cas: BlobStore | None, *, offload: bool = True
    ) -> Payload:
        """Compress, encrypt and offload a plain payload, as configured."""
        if payload.__class__ is Json:
            size = len(payload.text)
        elif payload.__class__ is Inline:
            size = len(payload.data)
        else:
            return payload  # sealed already (copied from another history)
        # NB: a JSON character takes at most 4 bytes and the envelope a few more, so a
        # short text is below every threshold without encoding it
        bound = 4 * size + 16
        compress = self.compression is not None and bound >= self.compress_above
        if (
            self.keys is None
            and not compress
            and not (offload and cas is not None and bound > self.offload_above)
        ):
            return payload
        raw = encode_payload(payload)
        if compress and len(raw) >= self.compress_above:
            packed = self._compressor().compress(raw)
            if len(packed) < len(raw):
                payload = Compressed(data=packed)
                raw = encode_payload(payload)
        if self.keys is not None:
            key_id, cipher = self._sealing_key(workflow_id)
            nonce = os.urandom(12)
            data = cipher.encrypt(nonce, raw, key_id.encode())
            payload = Encrypted(key_id=key_id, nonce=nonce, data=data)
            raw = encode_payload(payload)
        if offload and cas is not None and len(raw) > self.offload_above:
            payload = CasRef(digest=cas.put(raw), size=len(raw))
        return payload

    def _compressor(self) -> Any:
        comp = getattr(self._local, "compressor", None)
        if comp is None:
            comp = self._local.compressor = _zstd().ZstdCompressor(level=self.compression_level)
        return comp

    def _sealing_key(self, workflow_id: str) -> tuple[str, Any]:
        assert self.keys is not None
        if self.data_keys is None:
            return self.keys.current, self.keys.cipher(self.keys.current)
        key_id = data_key_id(workflow_id)
        return key_id, self._data_cipher(key_id, create=True)

    def _data_cipher(self, key_id: str, *, create: bool) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._data_ciphers.get(key_id)
            if hit is not None and hit[1] > now:
                return hit[0]
        assert self.keys is not None and self.data_keys is not None
        wrapped = self.data_keys.get(key_id)
        if wrapped is None:
            if not create:
                raise PayloadKeyError(
                    f"the data key {key_id!r} of this payload's workflow is not in the key "
                    f"vault {self.data_keys!r}: it was deleted (crypto-shredded with forget()), "
                    f"or this is not the vault the workers use"
                )
            wrapped = self.data_keys.add(key_id, self._wrap_key(key_id, Keyring.generate()))
        cipher = _aesgcm(self._unwrap_key(key_id, wrapped))
        with self._lock:
            self._data_ciphers[key_id] = (cipher, now + _DATA_KEY_TTL)
            self._data_ciphers.move_to_end(key_id)
            while len(self._data_ciphers) > _DATA_KEY_CACHE:
                self._data_ciphers.popitem(last=False)
        return cipher

    def _wrap_key(self, key_id: str, key: bytes) -> bytes:
        assert self.keys is not None
        nonce = os.urandom(12)
        data = self.keys.cipher(self.keys.current).encrypt(nonce, key, key_id.encode())
        return encode_payload(Encrypted(key_id=self.keys.current, nonce=nonce, data=data))

    def _unwrap_key(self, key_id: str, wrapped: bytes) -> bytes:
        assert self.keys is not None
        try:
            env = decode_payload(wrapped)
        except msgspec.DecodeError:
            env = None
        if not isinstance(env, Encrypted):
            raise CorruptionError(f"the stored data key {key_id!r} is damaged")
        return self._decrypt(env, key_id.encode(), f"the data key {key_id!r}")

    def _decrypt(self, env: Encrypted, aad: bytes, what: str) -> bytes:
        assert self.keys is not None
        from cryptography.exceptions import InvalidTag

        try:
            return self.keys.cipher(env.key_id).decrypt(env.nonce, env.data, aad)  # type: ignore[no-any-return]
        except InvalidTag:
            raise PayloadKeyError(
                f"{what} does not decrypt under key {env.key_id!r}: the keyring holds a "
                f"different key under that id, or the stored bytes were altered"
            ) from None

    def forget(self, workflow_id: str) -> bool:
        """Delete ``workflow_id``'s data key: its payloads become unreadable everywhere.

        Crypto-shredding: no history is rewritten.  Other processes that hold the
        key in memory drop it within a minute.  Returns False if there was no key.
        """
        if self.data_keys is None:
            raise ValueError("forget() needs per-workflow data keys: PayloadCodec(data_keys=...)")
        key_id = data_key_id(workflow_id)
        with self._lock:
            self._data_ciphers.pop(key_id, None)
        return self.data_keys.delete(key_id)

    # ------------------------------------------------------------------ opening

    def open(self, payload: Payload, cas: BlobStore | None) -> Payload:
        """Undo :meth:`seal`: fetch, decrypt and decompress down to a plain payload."""
        for _ in range(4):  # CasRef, Encrypted, Compressed: at most one of each
            cls = payload.__class__
            if cls is Json or cls is Inline:
                return payload
            if cls is CasRef:
                payload = self._fetch(payload, cas)  # type: ignore[arg-type]
            elif cls is Encrypted:
                payload = self._unwrap(self._open_encrypted(payload))  # type: ignore[arg-type]
            else:
                payload = self._unwrap(self._decompress(payload))  # type: ignore[arg-type]
        raise CorruptionError("a payload's envelopes are nested deeper than seal() ever writes")

    def _fetch(self, ref: CasRef, cas: BlobStore | None) -> Payload:
        if cas is None:
            raise PayloadError(
                f"this payload is in a CAS ({ref.digest}, {ref.size:,} bytes) but no CAS was "
                f"given: pass the workers' cas= to the Client or Worker"
            )
        data = cas.get(ref.digest)
        if len(data) != ref.size:
            raise CorruptionError(
                f"CAS blob {ref.digest} has {len(data):,} bytes, the history recorded {ref.size:,}"
            )
        return self._unwrap(data)

    def _open_encrypted(self, env: Encrypted) -> bytes:
        if self.keys is None:
            raise PayloadKeyError(
                f"this payload is encrypted (key {env.key_id!r}) and this codec has no keys: "
                f"use a PayloadCodec(keys=Keyring(...)) holding that key"
            )
        if env.key_id.startswith(_DATA_KEY_PREFIX):
            if self.data_keys is None:
                raise PayloadKeyError(
                    f"this payload is encrypted under a per-workflow data key ({env.key_id!r}) "
                    f"and this codec has no key vault: pass data_keys= as the workers do"
                )
            cipher = self._data_cipher(env.key_id, create=False)
            from cryptography.exceptions import InvalidTag

            try:
                return cipher.decrypt(env.nonce, env.data, env.key_id.encode())  # type: ignore[no-any-return]
            except InvalidTag:
                raise PayloadKeyError(
                    f"a payload does not decrypt under its data key {env.key_id!r}: "
                    f"the stored bytes were altered"
                ) from None
        return self._decrypt(env, env.key_id.encode(), "this payload")

    def _decompress(self, env: Compressed) -> bytes:
        if env.algorithm != "zstd":
            raise PayloadError(f"unknown compression {env.algorithm!r} (this codec reads zstd)")
        zstd = _zstd()
        limit = self.max_payload + 1024  # the inner payload's envelope: a few bytes more
        try:
            # NB: decompress() trusts a size the frame header declares and allocates it
            # whatever max_output_size says (that bounds only frames without one): a few
            # KiB could make it allocate gigabytes
            declared = zstd.frame_content_size(env.data)
        except zstd.ZstdError as exc:
            raise CorruptionError(f"a compressed payload has no valid zstd frame: {exc}") from None
        if declared > limit:
            raise PayloadTooLargeError(
                f"a compressed payload declares {declared:,} bytes, above this codec's "
                f"max_payload of {self.max_payload:,} bytes: damaged, or written by a codec "
                f"with a higher max_payload (use the same limit to read it)"
            )
        dec = getattr(self._local, "decompressor", None)
        if dec is None:
            dec = self._local.decompressor = zstd.ZstdDecompressor()
        try:
            return dec.decompress(env.data, max_output_size=limit)  # type: ignore[no-any-return]
        except zstd.ZstdError as exc:
            raise CorruptionError(f"a compressed payload does not decompress: {exc}") from None

    @staticmethod
    def _unwrap(data: bytes) -> Payload:
        try:
            return decode_payload(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CorruptionError(f"a sealed payload's inner bytes are damaged: {exc}") from None


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - the extra is part of dev
        raise PayloadError(f"zstd compression needs the zstandard package; {_EXTRA_HINT}") from None
    return zstandard


_DEFAULT_CHAIN = PayloadCodec()


class Payloads:
    """Seals events on their way into a store and opens them on their way out.

    The worker and the client each hold one, over their ``codec`` and ``cas``.
    A codec that is not a :class:`PayloadCodec` gets the default chain around it
    (offload to ``cas`` only).
    """

    def __init__(self, codec: Codec, cas: BlobStore | None) -> None:
        self.codec = codec
        self.cas = cas
        self.chain = codec if isinstance(codec, PayloadCodec) else _DEFAULT_CHAIN
        # NB: with nothing to do on the way in, sealing is skipped outright
        self.idle = cas is None and not self.chain.transforms

    def seal(self, payload: Payload, workflow_id: str, *, offload: bool = True) -> Payload:
        if self.idle:
            return payload
        return self.chain.seal(payload, workflow_id, self.cas, offload=offload)

    def seal_events(self, events: Sequence[Event], workflow_id: str) -> list[Event]:
        """``events`` with every plain payload sealed for ``workflow_id``."""
        if self.idle:
            return list(events)
        seal, cas = self.chain.seal, self.cas
        return [map_payloads(ev, lambda p: seal(p, workflow_id, cas)) for ev in events]

    def open(self, payload: Payload) -> Payload:
        if payload.__class__ is Json or payload.__class__ is Inline:
            return payload
        return self.chain.open(payload, self.cas)

    def open_events(self, events: Iterable[Event]) -> list[Event]:
        """``events`` with every payload opened down to plain (fetched, decrypted, ...)."""
        opener = self.open
        return [map_payloads(ev, opener) for ev in events]

    def decode(self, payload: Payload, type: Any = Any) -> Any:
        """Open and decode one payload (what ``Client.decode`` does)."""
        return self.codec.decode(self.open(payload), type)
