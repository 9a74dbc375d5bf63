//! The create-run request the run tests and the run benchmarks start from. Pure data, no
//! test-only paths: `benches/bench.rs` includes this file with `#[path]`, so it must
//! compile as a module of either binary.

use cairn_client::api::{ConfigFile, CreateRunRequest, RefSpec};

/// A request for the runs of `config` in `group`, on branch `main`, with nothing else set.
pub fn create_request(group: &str, config: &str) -> CreateRunRequest {
    CreateRunRequest {
        group: group.to_string(),
        config: ConfigFile {
            path: ".agola/config.yml".into(),
            content: config.to_string(),
        },
        reference: RefSpec {
            branch: Some("main".into()),
            ..RefSpec::default()
        },
        source: None,
        variables: Default::default(),
        environment: Default::default(),
        cache_group: None,
        annotations: Default::default(),
        tasks: Vec::new(),
        run_name: None,
        ..Default::default()
    }
}
