//! The peer endpoint, leases and the etcd gateway (H2, H3, L1, L5).
