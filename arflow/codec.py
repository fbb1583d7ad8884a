"""Encryption of what we hand to Temporal: free text stays out of its history (issue 15).

Dispute reasons, notes and provider error details travel in update payloads and activity
results; Temporal stores them in every workflow's history, readable by anyone with access to
the cluster, its Web UI or its database. ``EncryptionCodec`` encrypts each payload with
AES-GCM before it leaves the process and decrypts it on the way back, so the history holds
only ``binary/encrypted`` payloads. Failures are converted with their message and stack trace
moved into an (encrypted) payload too, since an exception's text often quotes the input.

Keys come from ``ARFLOW_CODEC_KEYS`` (``kid:base64key,kid:base64key``): the first encrypts,
every one decrypts, so a key is rotated by putting a new one in front. Payloads without the
encrypted encoding pass through unchanged: histories written before the codec was switched on
still replay and show. Every client, worker and replayer gets its converter from
``data_converter(settings)``, so they can never disagree.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from arflow.config import Settings
from arflow.errors import Invalid

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12  # AES-GCM's standard nonce; random per payload


class CodecKeyUnknown(Invalid):
    """A payload was encrypted with a key this process does not hold (removed too early from
    ``ARFLOW_CODEC_KEYS``, or the payload comes from another deployment)."""

    default_code = "codec_key_unknown"


class CodecDecryptFailed(Invalid):
    """A payload names a key we hold but does not decrypt with it (altered, or another key
    under the same id)."""

    default_code = "codec_decrypt_failed"


class EncryptionCodec(PayloadCodec):
    """AES-GCM over the serialized original ``Payload``: data is nonce + ciphertext, the
    metadata says ``encoding: binary/encrypted`` and the key id."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("EncryptionCodec needs at least one key")
        self.key_id = keys[0][0]
        self._ciphers = {kid: AESGCM(key) for kid, key in keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.key_id].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written without the codec (older histories, codec off)
        kid = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise CodecKeyUnknown(
                f"payload encrypted with key id {kid!r}, which is not in ARFLOW_CODEC_KEYS "
                f"(held: {', '.join(sorted(self._ciphers))}); add that key back to decrypt it"
            )
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
        except InvalidTag:
            raise CodecDecryptFailed(
                f"payload does not decrypt with key id {kid!r} (altered, or another key "
                "under that id)"
            ) from None
        return Payload.FromString(plain)


def codec(settings: Settings) -> EncryptionCodec | None:
    """The codec for ``settings``' keys; None when ``ARFLOW_CODEC_KEYS`` is empty."""
    keys = settings.parsed_codec_keys()
    return EncryptionCodec(keys) if keys else None


def data_converter(settings: Settings) -> DataConverter:
    """THE data converter of every Temporal client, worker and replayer of ours: Temporal's
    default payload converter (dataclasses, as today), plus encryption when keys are set."""
    payload_codec = codec(settings)
    if payload_codec is None:
        return DataConverter.default
    return dataclasses.replace(
        DataConverter.default,
        payload_codec=payload_codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def decode_in_place(payload_codec: PayloadCodec, messages: Sequence[Message]) -> None:
    """Decrypt every payload inside ``messages`` (history events, say) where it stands, and
    give encoded failures their message and stack trace back: what the admin's history view
    reads is then what it read before the codec."""
    found = [p for m in messages for p in _payloads(m)]
    if found:
        for payload, plain in zip(found, await payload_codec.decode(found), strict=True):
            payload.CopyFrom(plain)
    for m in messages:
        for failure in _failures(m):
            attrs = failure.encoded_attributes
            if failure.HasField("encoded_attributes") and (
                attrs.metadata.get("encoding") == b"json/plain"
            ):
                text = json.loads(attrs.data)
                failure.message = str(text.get("message", failure.message))
                failure.stack_trace = str(text.get("stack_trace", failure.stack_trace))
                failure.ClearField("encoded_attributes")


def _children(message: Message) -> Iterator[Message]:
    for field, value in message.ListFields():
        kind = field.message_type
        if kind is None:
            continue
        if kind.GetOptions().map_entry:
            if kind.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                yield from value.values()
        elif field.is_repeated:
            yield from value
        else:
            yield value


def _payloads(message: Message) -> Iterator[Payload]:
    for child in _children(message):
        if isinstance(child, Payload):
            yield child
        else:
            yield from _payloads(child)


def _failures(message: Message) -> Iterator[Failure]:
    for child in _children(message):
        if isinstance(child, Failure):
            yield child
        if not isinstance(child, Payload):
            yield from _failures(child)
