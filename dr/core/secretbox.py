"""Kubernetes Secrets as kube-apiserver encrypts them at rest with the secretbox provider, opened with PyNaCl.

The format (k8s.io/apiserver v0.36.3, the library of Kubernetes v1.36.3 that Talos v1.13.9 deploys by default):
- pkg/server/options/encryptionconfig/config.go: the stored value starts with ``k8s:enc:secretbox:v1:`` and the key's
  name and ``:`` (``secretboxTransformerPrefixV1``; each key's transformer has ``Prefix: prefix + config.Name +
  ":"``); the key is the configuration's ``secret`` base64-decoded, and must be 32 bytes;
- pkg/storage/value/encrypt/secretbox/secretbox.go: after the prefix, a random 24-byte nonce, then NaCl's
  ``secretbox.Seal`` of the plaintext (XSalsa20-Poly1305: 16-byte tag + ciphertext). ``TransformFromStorage``
  refuses fewer than 24 + 16 bytes and a box that does not open.
Talos v1.13.9 (internal/app/machined/pkg/controllers/k8s/internal/k8stemplates/apiserver.go) names the key ``key2``
and takes its secret from the cluster secrets' ``secretboxEncryptionSecret`` (in a talosctl secrets bundle:
``secrets.secretboxencryptionsecret``); older clusters use ``aescbc`` with ``key1``, then ``identity``.

NaCl's box is authenticated: a wrong key fails to open, it never yields garbage.
"""

from __future__ import annotations

import base64
import binascii

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

PREFIX = b"k8s:enc:secretbox:v1:"
TALOS_KEY_NAME = "key2"
NONCE = 24
KEY_SIZE = 32
ENCRYPTED = b"k8s:enc:"


class WrongKey(ValueError):
    """The key does not open the box (another cluster's key, or a rotated one)."""


class BadKey(ValueError):
    """The configured secret is not a base64 32-byte key."""


class NotSecretbox(ValueError):
    """The value is encrypted, but not by the secretbox provider (aescbc, aesgcm, kms)."""


def key_from_secret(secret: str) -> bytes:
    """The 32-byte key from its base64 text, as kube-apiserver reads the EncryptionConfiguration's ``secret``."""
    try:
        key = base64.b64decode(secret.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadKey(f"the secretbox secret is not base64 ({exc})") from exc
    if len(key) != KEY_SIZE:
        raise BadKey(f"the secretbox secret is {len(key)} bytes, not {KEY_SIZE}")
    return key


def is_encrypted(value: bytes) -> bool:
    return value.startswith(ENCRYPTED)


def split(value: bytes) -> tuple[str, bytes]:
    """(key name, nonce + box) of a secretbox value; ``NotSecretbox`` for another provider."""
    if not value.startswith(PREFIX):
        provider = value[len(ENCRYPTED):].split(b":", 1)[0].decode("ascii", "replace")
        raise NotSecretbox(f"encrypted by the {provider!r} provider, not secretbox")
    name, sep, rest = value[len(PREFIX):].partition(b":")
    if not sep:
        raise NotSecretbox("the secretbox prefix has no key name")
    return name.decode("ascii", "replace"), rest


def open_value(value: bytes, key: bytes) -> bytes:
    """The plaintext of a secretbox value (``k8s\\0`` protobuf, for a Secret)."""
    name, payload = split(value)
    if len(payload) < NONCE + SecretBox.MACBYTES:
        raise WrongKey(f"the stored data under key {name!r} is shorter than a nonce and a tag")
    try:
        return SecretBox(key).decrypt(payload[NONCE:], payload[:NONCE])
    except CryptoError as exc:
        raise WrongKey(f"the secretbox key does not open data encrypted under key {name!r}") from exc


def seal(plaintext: bytes, key: bytes, nonce: bytes, key_name: str = TALOS_KEY_NAME) -> bytes:
    """What kube-apiserver stores for ``plaintext`` (the sandbox seeds with it; kube-apiserver's nonce is random)."""
    box = SecretBox(key).encrypt(plaintext, nonce)  # nonce + tag + ciphertext, as secretbox.Seal(nonce[:], ...)
    return PREFIX + key_name.encode() + b":" + bytes(box)
