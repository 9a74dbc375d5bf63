//! Credentials and roles: who may call which route (H1, L2, L3).
