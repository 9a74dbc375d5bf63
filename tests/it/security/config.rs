//! Config amplifiers: regexes, YAML aliases, long chains (H4) and terminal output (L4).
