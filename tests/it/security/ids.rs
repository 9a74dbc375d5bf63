//! Identifiers never become paths (C2), hardened extraction (M4), bounded file reads (M7).
