"""SPDM protocol state machines (sans-IO): transcripts, secured sessions, the responder and its profile."""
