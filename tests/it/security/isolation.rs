//! Steps never see the server: drivers, environment, users, container limits (C1, L6).
