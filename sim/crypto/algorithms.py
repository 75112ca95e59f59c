"""SPDM algorithm identifiers (DSP0274 bit values, PROTOCOLS.md §2.6) and their sizes.

They live in the crypto layer because crypto selects primitives by these bits and may not import
the wire layer above it; ``sim.wire.spdm.common`` re-exports them.
"""

from __future__ import annotations

import enum


class BaseAsymAlgo(enum.IntFlag):
    RSASSA_2048 = 0x1
    RSAPSS_2048 = 0x2
    RSASSA_3072 = 0x4
    RSAPSS_3072 = 0x8
    ECDSA_P256 = 0x10
    RSASSA_4096 = 0x20
    RSAPSS_4096 = 0x40
    ECDSA_P384 = 0x80
    ECDSA_P521 = 0x100
    SM2_P256 = 0x200
    EDDSA_ED25519 = 0x400
    EDDSA_ED448 = 0x800


class BaseHashAlgo(enum.IntFlag):
    SHA_256 = 0x1
    SHA_384 = 0x2
    SHA_512 = 0x4
    SHA3_256 = 0x8
    SHA3_384 = 0x10
    SHA3_512 = 0x20
    SM3_256 = 0x40


class MeasurementHashAlgo(enum.IntFlag):
    RAW_BIT_STREAM_ONLY = 0x1
    SHA_256 = 0x2
    SHA_384 = 0x4
    SHA_512 = 0x8
    SHA3_256 = 0x10
    SHA3_384 = 0x20
    SHA3_512 = 0x40
    SM3_256 = 0x80


class DheGroup(enum.IntFlag):
    FFDHE_2048 = 0x1
    FFDHE_3072 = 0x2
    FFDHE_4096 = 0x4
    SECP_256_R1 = 0x8
    SECP_384_R1 = 0x10
    SECP_521_R1 = 0x20
    SM2_P256 = 0x40


class AeadSuite(enum.IntFlag):
    AES_128_GCM = 0x1
    AES_256_GCM = 0x2
    CHACHA20_POLY1305 = 0x4
    SM4_GCM = 0x8


class KeyScheduleAlgo(enum.IntFlag):
    SPDM = 0x1


# Sizes from PROTOCOLS.md §2.6.
HASH_SIZE: dict[BaseHashAlgo, int] = {
    BaseHashAlgo.SHA_256: 32, BaseHashAlgo.SHA_384: 48, BaseHashAlgo.SHA_512: 64,
    BaseHashAlgo.SHA3_256: 32, BaseHashAlgo.SHA3_384: 48, BaseHashAlgo.SHA3_512: 64,
    BaseHashAlgo.SM3_256: 32,
}
SIGNATURE_SIZE: dict[BaseAsymAlgo, int] = {
    BaseAsymAlgo.RSASSA_2048: 256, BaseAsymAlgo.RSAPSS_2048: 256,
    BaseAsymAlgo.RSASSA_3072: 384, BaseAsymAlgo.RSAPSS_3072: 384,
    BaseAsymAlgo.RSASSA_4096: 512, BaseAsymAlgo.RSAPSS_4096: 512,
    BaseAsymAlgo.ECDSA_P256: 64, BaseAsymAlgo.ECDSA_P384: 96, BaseAsymAlgo.ECDSA_P521: 132,
    BaseAsymAlgo.SM2_P256: 64, BaseAsymAlgo.EDDSA_ED25519: 64, BaseAsymAlgo.EDDSA_ED448: 114,
}
DHE_SIZE: dict[DheGroup, int] = {
    DheGroup.FFDHE_2048: 256, DheGroup.FFDHE_3072: 384, DheGroup.FFDHE_4096: 512,
    DheGroup.SECP_256_R1: 64, DheGroup.SECP_384_R1: 96, DheGroup.SECP_521_R1: 132,
    DheGroup.SM2_P256: 64,
}


