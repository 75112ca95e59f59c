"""tiosim: a discrete-event simulator of trusted PCIe I/O (DOE, SPDM, IDE_KM, TDISP)."""

__version__ = "0.1.0"
