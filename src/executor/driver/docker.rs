//! The docker driver (placeholder, being written).
