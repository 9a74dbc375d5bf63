//! The load: the chaos pipeline (a → b, a → c, {b, c} → d; `a` hands a file to `d`
//! through the workspace; every task ends with the marker step of [`super::markers`],
//! sleeping 0.2–2 s) and the clients that create its runs through the API, paced over
//! the fault window, each create recorded with its outcome. The client sends a create
//! again itself while the cluster cannot answer (its failover window); a create that
//! still fails is tried again by the test under the same idempotency key, so no run is
//! ever made twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::RunClient;
use cairn_client::api::CreateRunRequest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::request::create_request;

/// The pipeline's tasks, each with the index of its marker step and the line that step
/// checks in the workspace.
pub const TASKS: [(&str, usize, Option<&str>); 4] = [
    ("a", 2, None),
    ("b", 0, None),
    ("c", 0, None),
    ("d", 1, Some("from-a")),
];

/// The task names.
pub fn task_names() -> Vec<&'static str> {
    TASKS.iter().map(|t| t.0).collect()
}

/// The pipeline with each task's marker step sleeping `secs[i]`.
pub fn pipeline(secs: [f64; 4]) -> String {
    let step = |task: &str, s: f64, extra: &str| {
        format!("'sh \"$CHAOS_MARKS/step.sh\" {task} {s:.1}{extra}'")
    };
    format!(
        r#"runs:
  - name: chaos
    tasks:
      - name: a
        runtime: {{ containers: [ {{ image: busybox }} ] }}
        steps:
          - run: echo from-a > a.txt
          - save_to_workspace: {{ contents: [ {{ source_dir: ., dest_dir: ., paths: [ a.txt ] }} ] }}
          - run: {a}
      - name: b
        runtime: {{ containers: [ {{ image: busybox }} ] }}
        depends: [ a ]
        steps:
          - run: {b}
      - name: c
        runtime: {{ containers: [ {{ image: busybox }} ] }}
        depends: [ a ]
        steps:
          - run: {c}
      - name: d
        runtime: {{ containers: [ {{ image: busybox }} ] }}
        depends: [ b, c ]
        steps:
          - restore_workspace: {{ dest_dir: ws }}
          - run: {d}
"#,
        a = step("a", secs[0], ""),
        b = step("b", secs[1], ""),
        c = step("c", secs[2], ""),
        d = step("d", secs[3], " ws/a.txt from-a"),
    )
}

/// How many run groups the runs are spread over.
pub const BRANCHES: usize = 12;

/// One create request and what came of it (times since the test's clock started).
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Which of the test's runs it is for.
    pub run_no: usize,
    pub sent: Duration,
    pub answered: Duration,
    /// The created run's id, or the error.
    pub outcome: Result<String, String>,
}

/// What the clients do.
pub struct Load {
    /// The project: run `n` goes to its branch `b<n % BRANCHES>` (one group runs one run
    /// at a time, so the branches are how runs overlap).
    pub project: String,
    pub runs: usize,
    pub clients: usize,
    /// The creates are spread evenly over this window.
    pub window: Duration,
    pub marks: String,
    pub seed: u64,
}

impl Load {
    fn request(&self, run_no: usize, rng: &mut StdRng) -> CreateRunRequest {
        let secs = [(); 4].map(|_| rng.gen_range(0.2..=2.0));
        let group = format!("{}/branch/b{}", self.project, run_no % BRANCHES);
        let mut req = create_request(&group, &pipeline(secs));
        req.environment
            .insert("CHAOS_MARKS".into(), self.marks.clone());
        req.annotations
            .insert("chaos-run".into(), run_no.to_string());
        req
    }

    /// Runs the clients to the end: every run created once acknowledged (each client
    /// gives up on a run only after `give_up` of failures, which fails the test).
    pub async fn run(
        self: Arc<Self>,
        client: RunClient,
        start: Instant,
        give_up: Duration,
    ) -> Vec<Attempt> {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let mut clients = JoinSet::new();
        for c in 0..self.clients {
            let (load, client, attempts) = (self.clone(), client.clone(), attempts.clone());
            clients.spawn(async move {
                let mut rng = StdRng::seed_from_u64(load.seed ^ (c as u64 + 1) << 32);
                for run_no in (c..load.runs).step_by(load.clients) {
                    let due = load.window.mul_f64(run_no as f64 / load.runs as f64);
                    tokio::time::sleep_until(start + due).await;
                    let first = Instant::now();
                    let req = load.request(run_no, &mut rng);
                    let key = format!("chaos-{}-{run_no}", load.seed);
                    loop {
                        let sent = start.elapsed();
                        let outcome = client
                            .create_run_with_key(&req, &key)
                            .await
                            .map(|r| r.runs[0].run.id.clone())
                            .map_err(|e| e.to_string());
                        let ok = outcome.is_ok();
                        attempts.lock().unwrap().push(Attempt {
                            run_no,
                            sent,
                            answered: start.elapsed(),
                            outcome,
                        });
                        if ok {
                            break;
                        }
                        assert!(
                            first.elapsed() < give_up,
                            "run {run_no}: no create acknowledged within {give_up:?}"
                        );
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            });
        }
        while let Some(done) = clients.join_next().await {
            done.expect("a client task");
        }
        Arc::try_unwrap(attempts)
            .expect("the clients are done")
            .into_inner()
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_parses_into_the_four_task_dag() {
        let parsed =
            cairn::configfile::parse(".agola/config.yml", &pipeline([0.2, 2.0, 1.0, 0.5])).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    }
}
