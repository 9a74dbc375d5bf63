//! Bounded connections, bodies, streams and imports (H5, M1, M5, M6, L7).
