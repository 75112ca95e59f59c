"""Protocol benchmark: the whole ``tiosim attest`` flow in process, against the cost of its crypto alone.

The flow is :class:`~sim.interop.attest_flow.AttestProcedure` (DOE discovery, VCA, digests,
certificate, challenge, signed measurements, KEY_EXCHANGE/FINISH, IDE_KM QUERY, KEY_PROG x6,
K_SET_GO x6, TDISP version, capabilities, lock, report, start, state, stop, K_SET_STOP x6,
END_SESSION) driven against the device ``tiosim serve-device`` serves, with no socket in between.
By default each DOE object goes to the device's mailbox logic whole (the way the DMTF emulators
pass objects, so the number compares with the reference C stack); ``FlowTransport.MAILBOX`` also
writes and reads every DW through the DOE registers, as ``serve-device`` does.

The crypto cost is measured in the same run by re-executing the operations the flow performed,
as both sides' :class:`~sim.protocols.env.CryptoMeter` logged them (kind, count and byte size):
ECDSA signatures and verifications on the same curve, ECDH key generation + agreement, hashes
over the same byte counts, AEAD over the same record sizes, and HKDF calls, with the negotiated
hash and AEAD. Inputs are prepared before the clock starts, so only the primitives are timed.

Both are CPU time (``time.process_time_ns``), repeated and reported as medians; the figure of
merit is their ratio (target :data:`TARGET_RATIO`). Nothing here asserts a time.
"""

from __future__ import annotations

import cProfile
import dataclasses
import enum
import functools
import gc
import hashlib
import io
import pstats
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sim.crypto.aead import aead_key_size
from sim.crypto.algorithms import AeadSuite, BaseAsymAlgo, BaseHashAlgo, DheGroup
from sim.crypto.drbg import DeterministicRandom
from sim.crypto.hashes import hash_algorithm, hash_size
from sim.crypto.keys import curve_order
from sim.devices.doe_mailbox import DoeRequest
from sim.interop.attest_flow import AttestProcedure, StepResult
from sim.interop.device import DEFAULT_SEED, SocketDevice, build_socket_device, default_trusted_roots
from sim.protocols.env import CryptoOp, MeteredOp, ProtocolEnv
from sim.protocols.flow import Outbound, run_flow
from sim.protocols.spdm.policy import VerificationPolicy
from sim.protocols.spdm.requester import RequesterConfig, SpdmRequester, parse_version
from sim.wire.codec import DecodeError
from sim.wire.doe import DoeObject

TARGET_RATIO = 1.3  # the flow may cost at most this many times its crypto operations
DEFAULT_REPEAT = 7
PROFILE_TOP = 15
OWNER = "bench-requester"
AEAD_AAD_BYTES = 6  # session ID + length: the AAD of a DOE secured record without sequence number
HKDF_INFO_BYTES = 24  # a BinConcat of length, version label and key label, no context


class BenchmarkError(Exception):
    """The flow being measured did not complete: the measurement would be meaningless."""


class FlowTransport(enum.StrEnum):
    """How the requester's DOE objects reach the device."""

    OBJECT = "object"    # whole DOE objects into the device's mailbox logic (as the DMTF emulators pass them)
    MAILBOX = "mailbox"  # every DW through the DOE registers, as `tiosim serve-device` reaches the device


_ECDSA_CURVES: dict[CryptoOp, ec.EllipticCurve] = {
    CryptoOp.ECDSA_P256_SIGN: ec.SECP256R1(), CryptoOp.ECDSA_P256_VERIFY: ec.SECP256R1(),
    CryptoOp.ECDSA_P384_SIGN: ec.SECP384R1(), CryptoOp.ECDSA_P384_VERIFY: ec.SECP384R1(),
}
_ECDH_CURVES: dict[CryptoOp, ec.EllipticCurve] = {CryptoOp.ECDH_P256: ec.SECP256R1(), CryptoOp.ECDH_P384: ec.SECP384R1()}
_SIGNING = frozenset({CryptoOp.ECDSA_P256_SIGN, CryptoOp.ECDSA_P384_SIGN})


@functools.lru_cache(maxsize=8)
def _trusted_roots(seed: int) -> tuple[x509.Certificate, ...]:
    return tuple(default_trusted_roots(seed))


# --- the flow ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NegotiatedSuite:
    """What the flow negotiated: the SPDM version and the algorithms its crypto ran with."""

    version: int
    base_asym: BaseAsymAlgo
    base_hash: BaseHashAlgo
    dhe: DheGroup
    aead: AeadSuite

    def describe(self) -> str:
        names = " ".join(a.name or str(int(a)) for a in (self.base_asym, self.base_hash, self.dhe, self.aead))
        return f"SPDM {self.version >> 4}.{self.version & 0xF}, {names}"


class FlowRig:
    """One device and one requester, built before the clock starts; runs the attest flow once."""

    def __init__(self, device: SocketDevice, requester: SpdmRequester, env: ProtocolEnv,
                 transport: FlowTransport = FlowTransport.OBJECT) -> None:
        self.device = device
        self.requester = requester
        self.env = env
        self.transport_kind = FlowTransport(transport)
        self.procedure = AttestProcedure(requester, env)
        self._wire = hashlib.sha256()
        self.exchanges = 0
        self.wire_bytes = 0

    @classmethod
    def build(cls, seed: int = DEFAULT_SEED, version: str | None = None,
              transport: FlowTransport = FlowTransport.OBJECT) -> FlowRig:
        """The socket device for ``seed`` and a requester that trusts its root, as ``tiosim attest`` builds them."""
        device = build_socket_device(seed=seed)
        env = ProtocolEnv(DeterministicRandom(seed, OWNER), OWNER)
        config = RequesterConfig(max_version=parse_version(version) if version else None)
        requester = SpdmRequester(config, VerificationPolicy(trusted_roots=_trusted_roots(seed)), env)
        return cls(device, requester, env, transport)

    def _exchange(self, request: bytes) -> bytes | None:
        if self.transport_kind is FlowTransport.MAILBOX:
            result = self.device.target.exchange(request)
            return result.response if result.response else None
        return self.device.endpoint.mailbox.respond(DoeRequest(self.exchanges, request)).response

    def transport(self, out: Outbound) -> bytes | None:
        """DOE payload in, DOE payload out; every object in both directions enters the wire digest."""
        request = DoeObject.pcisig(out.object_type, out.payload).encode()
        self.exchanges += 1
        self._wire.update(request)
        self.wire_bytes += len(request)
        response = self._exchange(request)
        if not response:
            return None
        self._wire.update(response)
        self.wire_bytes += len(response)
        try:
            obj = DoeObject.decode(response)
        except DecodeError:
            return None
        return obj.payload

    def run(self) -> list[StepResult]:
        return run_flow(self.procedure.run(), self.transport)

    @property
    def ok(self) -> bool:
        return self.procedure.ok

    @property
    def wire_digest(self) -> str:
        """SHA-256 of every request and response DOE object in order: the flow's bytes on the wire."""
        return self._wire.hexdigest()

    def metered_ops(self) -> tuple[MeteredOp, ...]:
        """The crypto operations both sides logged (requester first), taken out of their meters."""
        return tuple(self.env.meter.drain()) + tuple(self.device.dsm.env.meter.drain())

    def suite(self) -> NegotiatedSuite:
        algs = self.requester.algorithms
        if algs is None or algs.dhe_group is None or algs.aead_suite is None:
            raise BenchmarkError("the flow negotiated no DHE group or AEAD suite")
        return NegotiatedSuite(int(self.requester.version), BaseAsymAlgo(algs.base_asym_sel),
                               BaseHashAlgo(algs.base_hash_sel), DheGroup(algs.dhe_group), AeadSuite(algs.aead_suite))


@dataclasses.dataclass(frozen=True)
class FlowRun:
    """One timed run of the flow and what it did."""

    cpu_ns: int
    setup_ns: int
    steps: tuple[StepResult, ...]
    exchanges: int
    wire_bytes: int
    wire_digest: str
    ops: tuple[MeteredOp, ...]
    suite: NegotiatedSuite


def time_flow(seed: int = DEFAULT_SEED, version: str | None = None,
              transport: FlowTransport = FlowTransport.OBJECT) -> FlowRun:
    """Build a fresh rig (timed apart as setup), then run and time the whole flow once."""
    gc.collect()
    t0 = time.process_time_ns()
    rig = FlowRig.build(seed, version, transport)
    t1 = time.process_time_ns()
    steps = rig.run()
    t2 = time.process_time_ns()
    if not rig.ok:
        failure = rig.procedure.first_failure
        raise BenchmarkError(f"the attest flow failed at {failure.step if failure else '?'}: "
                             f"{failure.detail if failure else 'no steps'}")
    return FlowRun(t2 - t1, t1 - t0, tuple(steps), rig.exchanges, rig.wire_bytes, rig.wire_digest,
                   rig.metered_ops(), rig.suite())


def profile_flow(seed: int = DEFAULT_SEED, version: str | None = None,
                 transport: FlowTransport = FlowTransport.OBJECT, top: int = PROFILE_TOP) -> str:
    """cProfile of one flow run: the ``top`` functions by cumulative time, as pstats prints them."""
    rig = FlowRig.build(seed, version, transport)
    profiler = cProfile.Profile()
    profiler.runcall(rig.run)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(pstats.SortKey.CUMULATIVE).print_stats(top)
    return out.getvalue()


# --- the crypto alone ----------------------------------------------------------------------------


def _filler(n: int, tag: int) -> bytes:
    """Deterministic non-zero bytes (no primitive gets to short-cut on zeros)."""
    block = hashlib.sha512(tag.to_bytes(8, "little")).digest()
    return (block * (n // len(block) + 1))[:n]


class CryptoWorkload:
    """The flow's metered operations, re-executed with the real primitives on prepared inputs.

    Each operation becomes a zero-argument callable; building them (keys, signatures to verify,
    peer public keys, buffers) happens here, outside any timing.
    """

    def __init__(self, ops: Sequence[MeteredOp], hash_algo: BaseHashAlgo, aead: AeadSuite) -> None:
        self.ops = tuple(ops)
        self.hash_algo = BaseHashAlgo(hash_algo)
        self.aead = AeadSuite(aead)
        self._hash = hash_algorithm(self.hash_algo)
        self._calls: dict[CryptoOp, list[Callable[[], Any]]] = {}
        self._keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        for i, op in enumerate(self.ops):
            self._calls.setdefault(op.op, []).append(self._prepare(op, i))

    @classmethod
    def of_flow(cls, run: FlowRun) -> CryptoWorkload:
        return cls(run.ops, run.suite.base_hash, run.suite.aead)

    def counts(self) -> dict[CryptoOp, int]:
        return {op: len(calls) for op, calls in self._calls.items()}

    def byte_counts(self) -> dict[CryptoOp, int]:
        out: dict[CryptoOp, int] = {}
        for op in self.ops:
            out[op.op] = out.get(op.op, 0) + (op.nbytes or 0)
        return out

    def _key(self, curve: ec.EllipticCurve, role: str) -> ec.EllipticCurvePrivateKey:
        key = self._keys.get(f"{curve.name}/{role}")
        if key is None:
            scalar = int.from_bytes(hashlib.sha512(f"bench {curve.name} {role}".encode()).digest(), "big")
            key = ec.derive_private_key(scalar % (curve_order(curve) - 1) + 1, curve)
            self._keys[f"{curve.name}/{role}"] = key
        return key

    def _prepare(self, op: MeteredOp, i: int) -> Callable[[], Any]:
        kind = op.op
        if kind in _ECDSA_CURVES:
            curve = _ECDSA_CURVES[kind]
            key = self._key(curve, "signer")
            algorithm = ec.ECDSA(utils.Prehashed(self._hash), deterministic_signing=True)
            m_hash = _filler(hash_size(self.hash_algo), i)
            if kind in _SIGNING:
                return functools.partial(key.sign, m_hash, algorithm)
            signature = key.sign(m_hash, algorithm)
            return functools.partial(key.public_key().verify, signature, m_hash, ec.ECDSA(utils.Prehashed(self._hash)))
        if kind in _ECDH_CURVES:
            curve = _ECDH_CURVES[kind]
            peer = self._key(curve, "peer").public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
            scalar = int.from_bytes(_filler(64, i), "big") % (curve_order(curve) - 1) + 1
            return functools.partial(_ecdh, curve, scalar, peer)
        if kind is CryptoOp.HASH_PER_KIB:
            return functools.partial(_hash_once, self._hash, _filler(op.nbytes or 0, i))
        if kind is CryptoOp.AEAD_PER_KIB:
            key = _filler(aead_key_size(self.aead), i)
            cls = ChaCha20Poly1305 if self.aead is AeadSuite.CHACHA20_POLY1305 else AESGCM
            return functools.partial(_aead_once, cls, key, _filler(12, i + 1), _filler(op.nbytes or 0, i + 2),
                                     _filler(AEAD_AAD_BYTES, i + 3))
        if kind is CryptoOp.HKDF:
            size = hash_size(self.hash_algo)
            return functools.partial(_hkdf_once, self._hash, size, _filler(HKDF_INFO_BYTES, i), _filler(size, i + 1))
        raise BenchmarkError(f"no re-execution for metered operation {kind}")

    def run(self) -> dict[CryptoOp, int]:
        """Execute every operation once; CPU ns per kind (operations of a kind run back to back)."""
        spent: dict[CryptoOp, int] = {}
        clock = time.process_time_ns
        for kind, calls in self._calls.items():
            t0 = clock()
            for call in calls:
                call()
            spent[kind] = clock() - t0
        return spent


def _ecdh(curve: ec.EllipticCurve, scalar: int, peer_point: bytes) -> bytes:
    """Key generation, the peer's point decoded and checked, and the agreement: one KEY_EXCHANGE side."""
    own = ec.derive_private_key(scalar, curve)
    peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, peer_point)
    return own.exchange(ec.ECDH(), peer)


def _hash_once(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _aead_once(cls: type[AESGCM] | type[ChaCha20Poly1305], key: bytes, nonce: bytes, data: bytes, aad: bytes) -> bytes:
    return cls(key).encrypt(nonce, data, aad)


def _hkdf_once(algorithm: hashes.HashAlgorithm, length: int, info: bytes, prk: bytes) -> bytes:
    return HKDFExpand(algorithm=algorithm, length=length, info=info).derive(prk)


# --- the benchmark -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OpCost:
    """One kind of crypto operation in the flow: how many, over how many bytes, median CPU ns of all of them."""

    op: CryptoOp
    count: int
    nbytes: int
    cpu_ns: int


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms"


@dataclasses.dataclass(frozen=True)
class ProtocolBenchResult:
    """Everything one protocol benchmark run measured; the ratios are computed from these numbers."""

    seed: int
    repeat: int
    suite: NegotiatedSuite
    steps: tuple[str, ...]
    exchanges: int
    wire_bytes: int
    wire_digest: str
    flow_ns: tuple[int, ...]          # CPU time of each timed flow run (DOE objects to the mailbox logic)
    crypto_ns: tuple[int, ...]        # CPU time of each re-execution of the flow's crypto operations
    crypto_by_op_ns: tuple[dict[CryptoOp, int], ...]  # the same, per operation kind, per repeat
    op_counts: dict[CryptoOp, int]
    op_bytes: dict[CryptoOp, int]
    setup_ns: tuple[int, ...]         # building the device and the requester (not part of the flow)
    mailbox_flow_ns: tuple[int, ...] = ()  # the same flow with every DW through the DOE registers

    @property
    def flow_median_ns(self) -> float:
        return _median(self.flow_ns)

    @property
    def crypto_median_ns(self) -> float:
        return _median(self.crypto_ns)

    @property
    def ratio(self) -> float:
        """Median flow CPU time over median crypto CPU time."""
        return self.flow_median_ns / self.crypto_median_ns

    @property
    def run_ratios(self) -> tuple[float, ...]:
        """Flow over crypto of each repeat: the two were timed back to back, so load drift mostly cancels."""
        return tuple(f / c for f, c in zip(self.flow_ns, self.crypto_ns, strict=True))

    @property
    def mailbox_ratio(self) -> float | None:
        return _median(self.mailbox_flow_ns) / self.crypto_median_ns if self.mailbox_flow_ns else None

    @property
    def target_met(self) -> bool:
        return self.ratio <= TARGET_RATIO

    def op_costs(self) -> list[OpCost]:
        return [OpCost(op, n, self.op_bytes.get(op, 0), round(_median([r.get(op, 0) for r in self.crypto_by_op_ns])))
                for op, n in self.op_counts.items()]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (times in ns, medians and every sample)."""
        return {
            "seed": self.seed, "repeat": self.repeat, "spdm_version": f"{self.suite.version >> 4}.{self.suite.version & 0xF}",
            "algorithms": {"base_asym": self.suite.base_asym.name, "base_hash": self.suite.base_hash.name,
                           "dhe": self.suite.dhe.name, "aead": self.suite.aead.name},
            "steps": list(self.steps), "exchanges": self.exchanges, "wire_bytes": self.wire_bytes,
            "wire_sha256": self.wire_digest,
            "flow_cpu_ns": {"median": self.flow_median_ns, "samples": list(self.flow_ns)},
            "crypto_cpu_ns": {"median": self.crypto_median_ns, "samples": list(self.crypto_ns)},
            "crypto_ops": [{"op": str(c.op), "count": c.count, "bytes": c.nbytes, "median_cpu_ns": c.cpu_ns}
                           for c in self.op_costs()],
            "ratio": self.ratio, "target_ratio": TARGET_RATIO, "target_met": self.target_met,
            "run_ratios": {"median": _median(self.run_ratios), "samples": list(self.run_ratios)},
            "setup_cpu_ns": {"median": _median(self.setup_ns), "samples": list(self.setup_ns)},
            "mailbox_flow_cpu_ns": ({"median": _median(self.mailbox_flow_ns), "samples": list(self.mailbox_flow_ns)}
                                    if self.mailbox_flow_ns else None),
            "mailbox_ratio": self.mailbox_ratio,
        }

    def lines(self) -> list[str]:
        """The human-readable report."""
        flows = self.flow_ns
        out = [
            f"protocol benchmark: the tiosim attest flow in process (seed {self.seed}, {self.repeat} repeats, "
            "CPU time, medians)",
            f"  flow:        {self.suite.describe()}; {len(self.steps)} steps, {self.exchanges} DOE exchanges, "
            f"{self.wire_bytes} bytes, wire sha256 {self.wire_digest[:16]}",
            f"  flow CPU:    {_ms(self.flow_median_ns)}  (min {_ms(min(flows))}, max {_ms(max(flows))})",
            f"  crypto CPU:  {_ms(self.crypto_median_ns)}  ({sum(self.op_counts.values())} operations re-executed)",
        ]
        for c in self.op_costs():
            size = f", {c.nbytes} bytes" if c.nbytes else ""
            out.append(f"    {c.op.value:<18} {c.count:>4} ops{size:<14} {_ms(c.cpu_ns)}")
        verdict = "met" if self.target_met else "NOT met"
        out.append(f"  ratio:       {self.ratio:.2f}  (flow / crypto; target <= {TARGET_RATIO}: {verdict})")
        runs = self.run_ratios
        out.append(f"  per repeat:  median {_median(runs):.2f}, min {min(runs):.2f}, max {max(runs):.2f}  "
                   "(each flow over the crypto timed right after it)")
        if self.mailbox_flow_ns:
            out.append(f"  via DOE registers (as serve-device): {_ms(_median(self.mailbox_flow_ns))}, "
                       f"ratio {self.mailbox_ratio:.2f}")
        out.append(f"  setup (device + requester, outside the flow): {_ms(_median(self.setup_ns))}")
        return out


def measure_protocol(repeat: int = DEFAULT_REPEAT, *, seed: int = DEFAULT_SEED, version: str | None = None,
                     mailbox: bool = True) -> ProtocolBenchResult:
    """Run the flow and its crypto ``repeat`` times each, interleaved, after one warm-up of each.

    The crypto workload is derived from the warm-up flow's meters; every timed flow must put the
    same bytes on the wire and meter the same operations, or the run is refused as inconsistent.
    """
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    warm = time_flow(seed, version)
    workload = CryptoWorkload.of_flow(warm)
    workload.run()
    expected_counts = workload.counts()
    flows: list[FlowRun] = []
    crypto: list[dict[CryptoOp, int]] = []
    mailbox_ns: list[int] = []
    for _ in range(repeat):
        run = time_flow(seed, version)
        if run.wire_digest != warm.wire_digest or _counts(run.ops) != expected_counts:
            raise BenchmarkError("two runs of the same seeded flow differ: the flow is not deterministic")
        flows.append(run)
        gc.collect()
        crypto.append(workload.run())
        if mailbox:
            via_registers = time_flow(seed, version, FlowTransport.MAILBOX)
            if via_registers.wire_digest != warm.wire_digest:
                raise BenchmarkError("the flow through the DOE registers put different bytes on the wire")
            mailbox_ns.append(via_registers.cpu_ns)
    return ProtocolBenchResult(
        seed=seed, repeat=repeat, suite=warm.suite, steps=tuple(s.step for s in warm.steps),
        exchanges=warm.exchanges, wire_bytes=warm.wire_bytes, wire_digest=warm.wire_digest,
        flow_ns=tuple(r.cpu_ns for r in flows), crypto_ns=tuple(sum(c.values()) for c in crypto),
        crypto_by_op_ns=tuple(crypto), op_counts=expected_counts, op_bytes=workload.byte_counts(),
        setup_ns=tuple(r.setup_ns for r in flows), mailbox_flow_ns=tuple(mailbox_ns))


def _counts(ops: Sequence[MeteredOp]) -> dict[CryptoOp, int]:
    out: dict[CryptoOp, int] = {}
    for op in ops:
        out[op.op] = out.get(op.op, 0) + 1
    return out
