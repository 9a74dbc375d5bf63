//! TLS on client and peer ports, certificates from `cairn cert` (M2).
