"""NEGOTIATE_ALGORITHMS, ALGORITHMS and the 1.3 supported-algorithms block (PROTOCOLS.md §2.6).

The Length field of each structure must equal its encoded size (checked on decode, computed on
encode by :class:`~sim.wire.spdm.common.LengthPrefixed`). Param1 counts the AlgStructs from 1.1
on; in 1.0 it is reserved and there are no AlgStructs. OtherParams (1.2) and MELSpecification
(1.3) are reserved bytes before the version that defines them, and their attributes are then None.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

from sim.wire.codec import Array, Const, EncodeError, LengthOf, Message, Reader, Reserved, Spec, u8, u16, u32
from sim.wire.spdm.common import (
    AeadSuite,
    AlgType,
    BaseAsymAlgo,
    BaseHashAlgo,
    DheGroup,
    KeyScheduleAlgo,
    LengthPrefixed,
    MeasurementHashAlgo,
    MeasurementSpec,
    RegistryId,
    RequestCode,
    ResponseCode,
    SpdmContext,
    SpdmMessage,
    TotalLength,
    before,
    gate_field,
    introduced,
    since,
)


class OtherParams(enum.IntFlag):
    """OtherParamsSupport / OtherParamsSelection (1.2+): opaque data formats and 1.3 MultiKeyConn."""

    OPAQUE_DATA_FMT0 = 0x01
    OPAQUE_DATA_FMT1 = 0x02
    MULTI_KEY_CONN = 0x10


class MelSpecification(enum.IntFlag):
    """MELSpecification / MELSpecificationSel (1.3): measurement extension log format."""

    DMTF = 0x01


# AlgSupported of an AlgStruct is a bitmask whose meaning depends on AlgType (§2.6).
ALG_SUPPORTED_TYPE: dict[AlgType, type[enum.IntFlag]] = {
    AlgType.DHE: DheGroup,
    AlgType.AEAD: AeadSuite,
    AlgType.REQ_BASE_ASYM_ALG: BaseAsymAlgo,
    AlgType.KEY_SCHEDULE: KeyScheduleAlgo,
}

FIXED_ALG_COUNT = 2  # bytes of AlgSupported in every AlgStruct of 1.1-1.3 (AlgCount bits 7:4)


def max_request_length(version: int) -> int:
    """Largest NEGOTIATE_ALGORITHMS Length a responder accepts: 0x40 in 1.0, 0x80 from 1.1 on."""
    return 0x40 if version < 0x11 else 0x80


def max_ext_alg_count(version: int) -> int:
    """Most extended algorithms (ExtAsym + ExtHash + AlgStruct externals): 8 in 1.0, 20 from 1.1 on."""
    return 8 if version < 0x11 else 20


def flag_names(value: int) -> str:
    """Member names of a flag value joined by '|' ("none" for 0), with unknown bits in hex."""
    if not isinstance(value, enum.IntFlag):
        return f"0x{int(value):x}"
    names = [m.name for m in type(value) if m.value and (value & m) == m and m.name]
    rest = int(value) & ~sum(int(m) for m in type(value) if m.value and (value & m) == m)
    parts = names + ([f"0x{rest:x}"] if rest else [])
    return "|".join(parts) if parts else "none"


@dataclasses.dataclass(frozen=True)
class ExtAlg(Message):
    """An extended (registry-defined) algorithm: RegistryID(1), Reserved(1), AlgorithmID(2)."""

    LAYOUT = (u8("registry_id", RegistryId), Reserved(1), u16("algorithm_id"))

    registry_id: RegistryId
    algorithm_id: int


class _AlgCount(Spec):
    """AlgCount byte: bits 7:4 FixedAlgCount (must be 2), bits 3:0 the number of external entries."""

    derived = True

    def __init__(self) -> None:
        self.name, self.when = "alg_count", None

    def encode(self, values: dict[str, Any], ctx: Any, out: bytearray) -> None:
        n = len(values["external"])
        if n > 0xF:
            raise EncodeError(f"an AlgStruct holds at most 15 external algorithms, not {n}")
        out.append((FIXED_ALG_COUNT << 4) | n)
        values["ext_count"] = n  # what the external array is sized by, as on decode

    def decode(self, r: Reader, values: dict[str, Any], ctx: Any) -> None:
        start = r.offset()
        count = r.take(1, self.name)[0]
        if count >> 4 != FIXED_ALG_COUNT:
            raise r.fail(self.name, f"FixedAlgCount is {count >> 4}, SPDM 1.1-1.3 define only 2", start)
        values["ext_count"] = count & 0xF


@dataclasses.dataclass(frozen=True)
class AlgStruct(Message):
    """One AlgStruct: AlgType, AlgCount (0x2n), AlgSupported (2), then n external entries.

    ``supported`` holds the flag type of its AlgType (DheGroup, AeadSuite, BaseAsymAlgo,
    KeyScheduleAlgo); types without a flag enum here (1.4 PQC/KEM) keep a plain int.
    """

    LAYOUT = (u8("alg_type", AlgType), _AlgCount(), u16("supported"), Array("external", ExtAlg, count="ext_count"))

    alg_type: AlgType
    supported: int
    external: tuple[ExtAlg, ...] = ()

    def __post_init__(self) -> None:
        flag_type = ALG_SUPPORTED_TYPE.get(AlgType(self.alg_type))
        if flag_type is not None and not isinstance(self.supported, flag_type):
            object.__setattr__(self, "supported", flag_type(int(self.supported)))
        object.__setattr__(self, "external", tuple(self.external))

    def __str__(self) -> str:
        return f"{AlgType(self.alg_type).name}={flag_names(self.supported)}"


def _header_with_struct_count(code: int) -> tuple[Spec, ...]:
    """The SPDM header with Param1 = AlgStruct count from 1.1 on (reserved in 1.0) and Param2 reserved."""
    return (
        u8("version"),
        Const("code", 1, code),
        LengthOf("param1", 1, "alg_structs", when=since(0x11)),
        Reserved(1, "param1", when=before(0x11)),
        Reserved(1, "param2"),
    )


def _gate_alg_structs(msg: Any) -> None:
    structs = () if msg.alg_structs is None else tuple(msg.alg_structs)
    if structs and msg.version < 0x11:
        raise ValueError("SPDM 1.0 has no AlgStructs")
    object.__setattr__(msg, "alg_structs", structs)


def _find_struct(structs: tuple[AlgStruct, ...], alg_type: AlgType) -> AlgStruct | None:
    for s in structs:
        if s.alg_type == alg_type:
            return s
    return None


@dataclasses.dataclass(frozen=True)
class NegotiateAlgorithms(LengthPrefixed, SpdmMessage):
    """NEGOTIATE_ALGORITHMS (0xE3): the requester's algorithm offer; 32-byte fixed part (§2.6)."""

    CODE: ClassVar[int] = RequestCode.NEGOTIATE_ALGORITHMS
    NAME: ClassVar[str] = "NEGOTIATE_ALGORITHMS"
    LAYOUT = _header_with_struct_count(CODE) + (
        TotalLength(),
        u8("measurement_specification", MeasurementSpec),
        *introduced(0x12, u8("other_params_support", OtherParams)),
        u32("base_asym_algo", BaseAsymAlgo),
        u32("base_hash_algo", BaseHashAlgo),
        Reserved(12),
        LengthOf("ext_asym_count", 1, "ext_asym"),
        LengthOf("ext_hash_count", 1, "ext_hash"),
        Reserved(1),
        *introduced(0x13, u8("mel_specification", MelSpecification)),
        Array("ext_asym", ExtAlg, count="ext_asym_count"),
        Array("ext_hash", ExtAlg, count="ext_hash_count"),
        Array("alg_structs", AlgStruct, count="param1", when=since(0x11)),
    )

    version: int
    base_asym_algo: BaseAsymAlgo
    base_hash_algo: BaseHashAlgo
    measurement_specification: MeasurementSpec = MeasurementSpec.DMTF
    other_params_support: OtherParams | None = None
    mel_specification: MelSpecification | None = None
    ext_asym: tuple[ExtAlg, ...] = ()
    ext_hash: tuple[ExtAlg, ...] = ()
    alg_structs: tuple[AlgStruct, ...] = ()

    def __post_init__(self) -> None:
        gate_field(self, "other_params_support", self.version >= 0x12, OtherParams(0))
        gate_field(self, "mel_specification", self.version >= 0x13, MelSpecification(0))
        object.__setattr__(self, "ext_asym", tuple(self.ext_asym))
        object.__setattr__(self, "ext_hash", tuple(self.ext_hash))
        _gate_alg_structs(self)

    def struct(self, alg_type: AlgType) -> AlgStruct | None:
        """The AlgStruct of one AlgType, if the request carries it."""
        return _find_struct(self.alg_structs, alg_type)

    def limit_violations(self) -> list[str]:
        """Why a responder must answer InvalidRequest although the bytes decode (§2.6 limits), or []."""
        problems: list[str] = []
        size = len(self.encode())
        max_len = max_request_length(self.version)
        if size > max_len:
            problems.append(f"Length {size} exceeds 0x{max_len:x}")
        ext = len(self.ext_asym) + len(self.ext_hash) + sum(len(s.external) for s in self.alg_structs)
        max_ext = max_ext_alg_count(self.version)
        if ext > max_ext:
            problems.append(f"{ext} extended algorithms exceed {max_ext}")
        types = [int(s.alg_type) for s in self.alg_structs]
        if any(b <= a for a, b in zip(types, types[1:], strict=False)):
            problems.append(f"AlgTypes {types} are not strictly ascending")
        if self.version < 0x14 and any(t > AlgType.KEY_SCHEDULE for t in types):
            problems.append("AlgType above KeySchedule before SPDM 1.4")
        return problems

    def summary(self) -> str:
        structs = " ".join(str(s) for s in self.alg_structs)
        return (f"NEGOTIATE_ALGORITHMS asym={flag_names(self.base_asym_algo)} hash={flag_names(self.base_hash_algo)}"
                + (f" {structs}" if structs else ""))


@dataclasses.dataclass(frozen=True)
class Algorithms(LengthPrefixed, SpdmMessage):
    """ALGORITHMS (0x63): the responder's selection; 36-byte fixed part, one bit per selected field (§2.6)."""

    CODE: ClassVar[int] = ResponseCode.ALGORITHMS
    NAME: ClassVar[str] = "ALGORITHMS"
    LAYOUT = _header_with_struct_count(CODE) + (
        TotalLength(),
        u8("measurement_specification_sel", MeasurementSpec),
        *introduced(0x12, u8("other_params_selection", OtherParams)),
        u32("measurement_hash_algo", MeasurementHashAlgo),
        u32("base_asym_sel", BaseAsymAlgo),
        u32("base_hash_sel", BaseHashAlgo),
        Reserved(11),
        *introduced(0x13, u8("mel_specification_sel", MelSpecification)),
        LengthOf("ext_asym_sel_count", 1, "ext_asym_sel"),
        LengthOf("ext_hash_sel_count", 1, "ext_hash_sel"),
        Reserved(2),
        Array("ext_asym_sel", ExtAlg, count="ext_asym_sel_count"),
        Array("ext_hash_sel", ExtAlg, count="ext_hash_sel_count"),
        Array("alg_structs", AlgStruct, count="param1", when=since(0x11)),
    )

    version: int
    measurement_hash_algo: MeasurementHashAlgo
    base_asym_sel: BaseAsymAlgo
    base_hash_sel: BaseHashAlgo
    measurement_specification_sel: MeasurementSpec = MeasurementSpec.DMTF
    other_params_selection: OtherParams | None = None
    mel_specification_sel: MelSpecification | None = None
    ext_asym_sel: tuple[ExtAlg, ...] = ()
    ext_hash_sel: tuple[ExtAlg, ...] = ()
    alg_structs: tuple[AlgStruct, ...] = ()

    def __post_init__(self) -> None:
        gate_field(self, "other_params_selection", self.version >= 0x12, OtherParams(0))
        gate_field(self, "mel_specification_sel", self.version >= 0x13, MelSpecification(0))
        object.__setattr__(self, "ext_asym_sel", tuple(self.ext_asym_sel))
        object.__setattr__(self, "ext_hash_sel", tuple(self.ext_hash_sel))
        _gate_alg_structs(self)

    def selected(self, alg_type: AlgType) -> Any:
        """The selected bit of one AlgType (a flag value), or None when that AlgStruct is absent or 0."""
        s = _find_struct(self.alg_structs, alg_type)
        return s.supported if s is not None and int(s.supported) else None

    @property
    def dhe_group(self) -> DheGroup | None:
        return self.selected(AlgType.DHE)

    @property
    def aead_suite(self) -> AeadSuite | None:
        return self.selected(AlgType.AEAD)

    @property
    def req_base_asym_alg(self) -> BaseAsymAlgo | None:
        return self.selected(AlgType.REQ_BASE_ASYM_ALG)

    @property
    def key_schedule(self) -> KeyScheduleAlgo | None:
        return self.selected(AlgType.KEY_SCHEDULE)

    def to_context(self, **kw: Any) -> SpdmContext:
        """The decoding context these selections imply (H, S, D, requester S); ``kw`` sets the rest.

        Raises ValueError when a selection is not exactly one known bit.
        """
        try:
            return SpdmContext.for_algorithms(self.base_hash_sel, self.base_asym_sel, self.dhe_group,
                                              self.req_base_asym_alg, **kw)
        except KeyError as exc:
            raise ValueError(f"ALGORITHMS selects no single known algorithm: {exc}") from None

    def summary(self) -> str:
        structs = " ".join(str(s) for s in self.alg_structs)
        return (f"ALGORITHMS asym={flag_names(self.base_asym_sel)} hash={flag_names(self.base_hash_sel)} "
                f"meas_hash={flag_names(self.measurement_hash_algo)}" + (f" {structs}" if structs else ""))


@dataclasses.dataclass(frozen=True)
class SupportedAlgorithms(LengthPrefixed, Message):
    """The 1.3 supported-algorithms block a responder appends to CAPABILITIES on request.

    Same fields as NEGOTIATE_ALGORITHMS without the version and code bytes: Param1 (AlgStruct
    count), Param2, Length (= the block's own size, as libspdm computes it [S]), then the offer.
    """

    LENGTH_OFFSET: ClassVar[int] = 2
    LAYOUT = (
        LengthOf("param1", 1, "alg_structs"),
        Reserved(1, "param2"),
        TotalLength(),
        u8("measurement_specification", MeasurementSpec),
        u8("other_params_support", OtherParams),
        u32("base_asym_algo", BaseAsymAlgo),
        u32("base_hash_algo", BaseHashAlgo),
        Reserved(12),
        LengthOf("ext_asym_count", 1, "ext_asym"),
        LengthOf("ext_hash_count", 1, "ext_hash"),
        Reserved(1),
        u8("mel_specification", MelSpecification),
        Array("ext_asym", ExtAlg, count="ext_asym_count"),
        Array("ext_hash", ExtAlg, count="ext_hash_count"),
        Array("alg_structs", AlgStruct, count="param1"),
    )

    base_asym_algo: BaseAsymAlgo
    base_hash_algo: BaseHashAlgo
    measurement_specification: MeasurementSpec = MeasurementSpec.DMTF
    other_params_support: OtherParams = OtherParams(0)
    mel_specification: MelSpecification = MelSpecification(0)
    ext_asym: tuple[ExtAlg, ...] = ()
    ext_hash: tuple[ExtAlg, ...] = ()
    alg_structs: tuple[AlgStruct, ...] = ()
