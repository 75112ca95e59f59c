"""SPDM transcripts: the message buffers that signatures and session keys are computed over.

Two objects, one per scope (PROTOCOLS.md §3.1-3.2):

* :class:`ConnectionTranscript` — the connection-wide buffers A (VCA), B (digests and
  certificates), C (challenge) and L (measurements), with the libspdm reset rules, and the
  assembled M1/M2 = A ‖ B ‖ C and L1/L2 = [A ‖] L (A only from SPDM 1.2 on).
* :class:`SessionTranscript` — the running hash of A ‖ Ct ‖ K ‖ F of one session, read at the
  cut points §3.2 names: the KEY_EXCHANGE_RSP signature, TH1, the two VerifyData values and TH2.

Both sides of a connection (requester and responder) keep their own copy; the same code on both
sides is what makes their hashes agree. Messages enter as the exact SPDM bytes (no DOE padding);
ERROR and RESPOND_IF_READY never enter (§3): :meth:`ConnectionTranscript.append` skips them.
"""

from __future__ import annotations

import enum

from sim.crypto.algorithms import BaseHashAlgo
from sim.crypto.hashes import TranscriptHash, digest
from sim.protocols.env import CryptoMeter
from sim.wire.spdm.common import RequestCode, ResponseCode

NEVER_RECORDED = frozenset({int(ResponseCode.ERROR), int(RequestCode.RESPOND_IF_READY)})


def recordable(message: bytes) -> bool:
    """False for the messages that never enter a transcript (ERROR, RESPOND_IF_READY) and for runts."""
    return len(message) >= 4 and message[1] not in NEVER_RECORDED


class Buffer(enum.Enum):
    """The connection-wide transcript buffers of §3.1."""

    A = "A"  # VCA: GET_VERSION .. ALGORITHMS
    B = "B"  # GET_DIGESTS / DIGESTS / GET_CERTIFICATE / CERTIFICATE
    C = "C"  # CHALLENGE / CHALLENGE_AUTH without signature
    L = "L"  # GET_MEASUREMENTS / MEASUREMENTS since the last signed one (per connection)


# Requests after which libspdm drops an unfinished B/C (challenge skipped), see before_request().
_ENDS_UNAUTHENTICATED_M1 = frozenset({
    RequestCode.KEY_EXCHANGE, RequestCode.GET_MEASUREMENTS, RequestCode.FINISH, RequestCode.PSK_EXCHANGE,
    RequestCode.PSK_FINISH, RequestCode.KEY_UPDATE, RequestCode.HEARTBEAT, RequestCode.GET_ENCAPSULATED_REQUEST,
    RequestCode.END_SESSION, RequestCode.GET_MEASUREMENT_EXTENSION_LOG, RequestCode.DELIVER_ENCAPSULATED_RESPONSE,
})


class ConnectionTranscript:
    """A, B, C and L of one connection, as raw bytes (they are short; hashing happens on demand)."""

    def __init__(self) -> None:
        self._buffers: dict[Buffer, bytearray] = {b: bytearray() for b in Buffer}

    # --- recording ------------------------------------------------------------------------------

    def append(self, buffer: Buffer, message: bytes) -> bool:
        """Add one whole message (or a message prefix such as CHALLENGE_AUTH without signature).

        Returns False, recording nothing, for ERROR / RESPOND_IF_READY (§3).
        """
        if not recordable(message):
            return False
        self._buffers[buffer] += message
        return True

    def add_vca(self, message: bytes) -> bool:
        return self.append(Buffer.A, message)

    def add_b(self, message: bytes) -> bool:
        return self.append(Buffer.B, message)

    def add_c(self, message: bytes) -> bool:
        return self.append(Buffer.C, message)

    def add_l(self, message: bytes) -> bool:
        return self.append(Buffer.L, message)

    # --- resets ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: a new GET_VERSION (or a conventional reset) starts the connection over."""
        for buf in self._buffers.values():
            buf.clear()

    def clear(self, *buffers: Buffer) -> None:
        for b in buffers:
            self._buffers[b].clear()

    def before_request(self, code: int, *, negotiated: bool, authenticated: bool) -> None:
        """Apply the buffer resets that receiving (or sending) request ``code`` implies (libspdm rules).

        * Any request other than GET_MEASUREMENTS resets L.
        * GET_DIGESTS restarts B.
        * A session or measurement request while the connection is not yet authenticated drops
          an unfinished B and C (the challenge was skipped).
        * GET_VERSION is handled by :meth:`reset` (it also resets A).
        """
        if code != RequestCode.GET_MEASUREMENTS:
            self.clear(Buffer.L)
        if code == RequestCode.GET_DIGESTS:
            self.clear(Buffer.B)
        elif code in _ENDS_UNAUTHENTICATED_M1 and negotiated and not authenticated:
            self.clear(Buffer.B, Buffer.C)

    def challenge_done(self) -> None:
        """After CHALLENGE_AUTH is signed (or verified) B and C start empty again (libspdm)."""
        self.clear(Buffer.B, Buffer.C)

    # --- reading --------------------------------------------------------------------------------

    def buffer(self, buffer: Buffer) -> bytes:
        return bytes(self._buffers[buffer])

    @property
    def vca(self) -> bytes:
        """A = GET_VERSION ‖ VERSION ‖ GET_CAPABILITIES ‖ CAPABILITIES ‖ NEGOTIATE_ALGORITHMS ‖ ALGORITHMS."""
        return self.buffer(Buffer.A)

    def m1m2(self) -> bytes:
        """M1/M2 = A ‖ B ‖ C: what CHALLENGE_AUTH is signed over (C must already hold the unsigned response)."""
        return self.vca + self.buffer(Buffer.B) + self.buffer(Buffer.C)

    def l1l2(self, version: int) -> bytes:
        """L1/L2 = L for SPDM 1.0/1.1 and A ‖ L from 1.2 on: what a signed MEASUREMENTS covers."""
        prefix = self.vca if version >= 0x12 else b""
        return prefix + self.buffer(Buffer.L)


class SessionTranscript:
    """The running hash A ‖ Ct ‖ K ‖ F of one DHE session, with the §3.2 cut points.

    ``cert_chain_hash`` is Ct = Hash(the SPDM certificate chain of the slot used); it is H bytes
    that enter the transcript as they are. The order of calls for a certificate/DHE session:

    1. ``key_exchange_signature_hash(KEY_EXCHANGE, KEY_EXCHANGE_RSP up to OpaqueData)`` → what the
       responder signs;
    2. ``th1(signature)`` → TH1 hash (handshake secrets, ResponderVerifyData);
    3. ``add(ResponderVerifyData)`` unless the handshake is in the clear;
    4. ``finish_verify_hash(FINISH header [+ signature])`` → what RequesterVerifyData MACs;
    5. ``add(RequesterVerifyData)``;
    6. in the clear only: ``finish_rsp_verify_hash(FINISH_RSP header)`` → what ResponderVerifyData MACs,
       then ``add(ResponderVerifyData)``; otherwise ``add(FINISH_RSP)``;
    7. ``th2()`` → TH2 hash (data keys).

    Every byte absorbed is metered as hashing when a meter is given.
    """

    def __init__(self, hash_algo: BaseHashAlgo, vca: bytes, cert_chain_hash: bytes = b"",
                 meter: CryptoMeter | None = None) -> None:
        self.hash_algo = BaseHashAlgo(hash_algo)
        self._meter = meter
        self._hash = TranscriptHash(self.hash_algo)
        self._raw = bytearray()
        self.th1_hash: bytes | None = None
        self.th2_hash: bytes | None = None
        self.add(vca)
        self.add(cert_chain_hash)

    def add(self, data: bytes) -> SessionTranscript:
        """Append bytes (a message or a message part) to the transcript."""
        if data:
            self._hash.update(bytes(data))
            self._raw += data
            if self._meter is not None:
                self._meter.hash(len(data))
        return self

    def digest(self) -> bytes:
        """Hash of everything so far; the transcript goes on."""
        return self._hash.digest()

    @property
    def data(self) -> bytes:
        """The raw transcript bytes (for tests, traces and spdm_dump-style debugging)."""
        return bytes(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    # --- the §3.2 cut points -------------------------------------------------------------------

    def key_exchange_signature_hash(self, key_exchange: bytes, rsp_signed_part: bytes) -> bytes:
        """Append KEY_EXCHANGE and KEY_EXCHANGE_RSP up to the end of OpaqueData; the hash the signature covers."""
        return self.add(key_exchange).add(rsp_signed_part).digest()

    def th1(self, signature: bytes = b"") -> bytes:
        """Append the KEY_EXCHANGE_RSP signature; TH1 = the hash without ResponderVerifyData."""
        self.th1_hash = self.add(signature).digest()
        return self.th1_hash

    def finish_verify_hash(self, finish_verify_part: bytes) -> bytes:
        """Append FINISH without RequesterVerifyData (header, plus signature under mutual auth); its hash."""
        return self.add(finish_verify_part).digest()

    def finish_rsp_verify_hash(self, finish_rsp_header: bytes) -> bytes:
        """Handshake in the clear: append the FINISH_RSP header; the hash ResponderVerifyData MACs."""
        return self.add(finish_rsp_header).digest()

    def th2(self, rest: bytes = b"") -> bytes:
        """Append what is left of FINISH_RSP (if anything); TH2 = the hash of the whole handshake."""
        self.th2_hash = self.add(rest).digest()
        return self.th2_hash


def cert_chain_hash(hash_algo: BaseHashAlgo, cert_chain: bytes, meter: CryptoMeter | None = None) -> bytes:
    """Ct and the DIGESTS / CertChainHash value: Hash(the whole SPDM certificate chain, header included)."""
    if meter is not None:
        meter.hash(len(cert_chain))
    return digest(BaseHashAlgo(hash_algo), cert_chain)
