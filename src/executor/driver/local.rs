//! The local driver (placeholder, being written).
