"""Ed25519 (RFC 8032) in plain Python: verification, and signing for ``ctl``.

The agent checks release manifests and operator intents with it and has no
``cryptography`` (docs/install.md: the agent's dependencies stay small); ``ctl`` signs
intents with it on an operator's machine, where nothing else is installed. Verification
handles only public data. Signing is not constant-time (Python integers): a process on the
operator's machine that can time ``ctl`` closely could learn about the key, which is
why keys live on operators' machines and not on shared servers (docs/security.md).

Verification is strict: a non-canonical ``S`` (>= L) or a point encoding that does not
decode is a failed check, as in RFC 8032; the group equation is checked unscaled
(``[S]B == R + [k]A``), matching ``cryptography``/OpenSSL on every RFC vector.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["KEY_PREFIX", "key_id", "parse_public_key", "public_key", "sign", "verify"]

#: How keys are written in settings and manifests: ``ed25519:`` and 32 bytes in base64.
KEY_PREFIX = "ed25519:"

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)

_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)


def _add(p: _Point, q: _Point) -> _Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _multiply(scalar: int, point: _Point) -> _Point:
    result: _Point = (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _equal(p: _Point, q: _Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % _P == 0 and (p[1] * q[2] - q[1] * p[2]) % _P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


def _decompress(data: bytes) -> _Point | None:
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % _P)


_BY = 4 * pow(5, _P - 2, _P) % _P
_BX = _recover_x(_BY, 0)
assert _BX is not None  # noqa: S101 - the base point decodes
_BASE: _Point = (_BX, _BY, 1, _BX * _BY % _P)


def _compress(point: _Point) -> bytes:
    inverse = pow(point[2], _P - 2, _P)
    x, y = point[0] * inverse % _P, point[1] * inverse % _P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _expand(seed: bytes) -> tuple[int, bytes]:
    if len(seed) != 32:
        raise ValueError("an ed25519 private key (seed) is 32 bytes")
    digest = hashlib.sha512(seed).digest()
    scalar = int.from_bytes(digest[:32], "little")
    scalar &= (1 << 254) - 8
    scalar |= 1 << 254
    return scalar, digest[32:]


def public_key(seed: bytes) -> bytes:
    """The 32-byte public key of a 32-byte private key (seed)."""
    scalar, _ = _expand(seed)
    return _compress(_multiply(scalar, _BASE))


def sign(seed: bytes, message: bytes) -> bytes:
    """The 64-byte signature of ``message`` (deterministic, RFC 8032 section 5.1.6)."""
    scalar, prefix = _expand(seed)
    public = _compress(_multiply(scalar, _BASE))
    r = int.from_bytes(hashlib.sha512(prefix + message).digest(), "little") % _L
    encoded_r = _compress(_multiply(r, _BASE))
    k = int.from_bytes(hashlib.sha512(encoded_r + public + message).digest(), "little") % _L
    return encoded_r + int.to_bytes((r + k * scalar) % _L, 32, "little")


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _decompress(public_key)
    r = _decompress(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    digest = hashlib.sha512(signature[:32] + public_key + message).digest()
    k = int.from_bytes(digest, "little") % _L
    return _equal(_multiply(s, _BASE), _add(r, _multiply(k, a)))


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of ``ed25519:<base64>``; ValueError saying what is wrong."""
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise ValueError(f"a public key is written {KEY_PREFIX}<base64 of 32 bytes>")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
    except ValueError:
        raise ValueError(f"the public key {text[:24]}... is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"an ed25519 public key is 32 bytes, {text[:24]}... has {len(raw)}")
    return raw


def key_id(public_key: bytes) -> str:
    """A short name for a key: the first 16 hex digits of SHA-256 over its 32 bytes."""
    return hashlib.sha256(public_key).hexdigest()[:16]
